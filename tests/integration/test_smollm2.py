"""SmolLM2-135M-Instruct (the default model) through 3 real server processes, 10 blocks each.

Slow: prepares the model once (cached), starts a DHT node and servers for blocks 0:10,
10:20 and 20:30 with the dev tools' launcher (`devtools.launcher`), and compares greedy
chat generation with transformers running the same checkpoint locally, token for token,
through the Python API and through `swarm generate --json`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from client.model import AutoDistributedModelForCausalLM
from devtools.launcher import LocalSwarm, LocalSwarmConfig
from swarm.default_model import resolve_model
from swarm.records import BlockRange

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROMPT = "What is the capital of France?"
NEW_TOKENS = 24
SPANS = (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30))


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_model("default")


@pytest.fixture(scope="module")
def swarm(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    config = LocalSwarmConfig(model_dir, SPANS, workdir=tmp_path_factory.mktemp("smollm2"),
                              server_args=("--drain-grace", "2"))
    with LocalSwarm(config) as running:
        yield running


@pytest.fixture(scope="module")
def chat_ids(model_dir: str) -> torch.Tensor:
    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
    return torch.as_tensor(encoded["input_ids"])


@pytest.fixture(scope="module")
def reference(model_dir: str, chat_ids: torch.Tensor) -> torch.Tensor:
    """What transformers generates locally: prompt + up to NEW_TOKENS greedy tokens."""
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train(False)
    with torch.inference_mode():
        out: torch.Tensor = model.generate(chat_ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    return out


def test_greedy_chat_equals_local_transformers(model_dir: str, swarm: LocalSwarm, chat_ids: torch.Tensor,
                                               reference: torch.Tensor) -> None:
    model = AutoDistributedModelForCausalLM.from_pretrained(model_dir, swarm.initial_peers)
    try:
        with model.inference_session(max_length=chat_ids.shape[1] + NEW_TOKENS) as session:
            out = model.generate(chat_ids, max_new_tokens=NEW_TOKENS, do_sample=False)
            route = session.route
    finally:
        model.close()
    assert out.tolist() == reference.tolist()
    text = AutoTokenizer.from_pretrained(model_dir).decode(out[0, chat_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
    hops = route.split(" -> ")
    assert [hop.rsplit("[", 1)[1].rstrip("]") for hop in hops] == [str(s) for s in SPANS]
    assert [hop.split("@", 1)[1].split("[")[0] for hop in hops] == [s.address for s in swarm.servers]


def test_cli_generate_json_through_the_swarm(model_dir: str, swarm: LocalSwarm, chat_ids: torch.Tensor,
                                             reference: torch.Tensor) -> None:
    command = [sys.executable, "-m", "client.cli", "generate", "--initial-peers", *swarm.initial_peers,
               "--model", model_dir, "--prompt", PROMPT, "--chat", "--max-new-tokens", str(NEW_TOKENS), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SWARM_LOG_LEVEL": "WARNING"}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["tokens"] == reference[0, chat_ids.shape[1]:].tolist()
    assert "Paris" in answer["text"]
    assert answer["route"].count(" -> ") == len(SPANS) - 1
    assert answer["tokens_per_s"] > 0


def test_servers_hold_only_their_blocks(swarm: LocalSwarm) -> None:
    for server, span in zip(swarm.servers, SPANS):
        log = Path(server.log).read_text()
        assert f"serving blocks {span} of SmolLM2-135M-Instruct" in log
        ready = server.ready()
        assert ready is not None and ready.blocks == str(span) and ready.state == "online"
        assert server.alive


def test_cli_chat_keeps_the_conversation_in_the_session(model_dir: str, swarm: LocalSwarm) -> None:
    command = [sys.executable, "-m", "client.cli", "chat", "--initial-peers", *swarm.initial_peers,
               "--model", model_dir, "--max-new-tokens", "24"]
    done = subprocess.run(command, input="What is the capital of France?\nAnd of Italy?\n/exit\n",
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SWARM_LOG_LEVEL": "INFO"}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Paris" in done.stdout and "Rome" in done.stdout, done.stdout
    # one session for both turns: the second turn sent only its new tokens
    assert done.stderr.count("new session with the whole conversation") == 1, done.stderr[-3000:]
    assert len(re.findall(r"^\[\d+ tokens in ", done.stderr, re.MULTILINE)) == 2, done.stderr[-3000:]
    assert "speculative decoding:" in done.stderr  # greedy replies draft by prompt lookup (auto)
