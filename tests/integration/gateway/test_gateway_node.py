"""Node.js against `swarm serve`: the `openai` npm package and @grpc/grpc-js get "The
capital of France is Paris." from the SmolLM2 swarm, with the same tokens as the Python
client gets. The test installs its npm packages itself (cached between runs) and is
skipped only if node/npm are missing or npm cannot install them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from transformers import AutoTokenizer

from swarm.v1 import text_generation_pb2 as pb
from swarm.v1 import text_generation_pb2_grpc
from tests.integration.gateway.conftest import Served
from tests.integration.gateway.processes import ROOT, npm_install

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

PROMPT = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
MAX_TOKENS = 24
PACKAGES = ("openai@^4", "@grpc/grpc-js@^1.10", "@grpc/proto-loader@^0.7")
SCRIPT = Path(__file__).with_name("node_client.mjs")


def python_chat_tokens(served: Served) -> list[int]:
    with grpc.insecure_channel(served.gateway.grpc) as channel:
        stub = text_generation_pb2_grpc.TextGenerationStub(channel)  # type: ignore[no-untyped-call]
        request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=PROMPT)],
                                 sampling=pb.SamplingOptions(temperature=0, max_tokens=MAX_TOKENS))
        return [t for answer in stub.Chat(request, timeout=600) for t in answer.token_ids]


def test_node_openai_and_grpc_clients(served: Served, tmp_path: Path) -> None:
    modules = npm_install(PACKAGES)
    tokenizer: Any = AutoTokenizer.from_pretrained(served.model_dir)
    templated = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                              tokenize=False)
    # Generate tokenizes plain text; the templated text must give the chat's very ids
    assert tokenizer(templated).input_ids == list(tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_dict=True)["input_ids"])
    # ES modules resolve packages from a node_modules next to the script (NODE_PATH is
    # ignored for `import`): run a copy next to a link to the cached install
    script = tmp_path / SCRIPT.name
    script.write_text(SCRIPT.read_text())
    (tmp_path / "node_modules").symlink_to(modules)
    env = {**os.environ, "GATEWAY_HTTP": served.gateway.http, "GATEWAY_GRPC": served.gateway.grpc,
           "PROTO_DIR": str(ROOT / "protos"), "PROMPT": PROMPT, "TEMPLATED": templated,
           "MAX_TOKENS": str(MAX_TOKENS)}
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=900, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["openai"]["model"] == "SmolLM2-135M-Instruct"
    assert got["openai"]["text"] == got["openai"]["streamed"] == ANSWER
    assert got["openai"]["finish"] == "stop" and got["openai"]["chunks"] >= 5
    assert got["openai"]["badStatus"] == 400
    expected = python_chat_tokens(served)
    assert got["grpc"]["chat"]["tokens"] == got["grpc"]["generate"]["tokens"] == expected
    assert got["grpc"]["chat"]["text"] == got["grpc"]["generate"]["text"] == ANSWER
    assert got["grpc"]["generate"]["finish"] == "FINISH_REASON_STOP"
    assert got["grpc"]["invalidCode"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
