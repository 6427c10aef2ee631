"""`swarm serve` over a real SmolLM2 swarm: the official `openai` Python client and gRPC
TextGeneration get "The capital of France is Paris.", equal to `swarm generate`'s greedy
answer token for token; bad requests are 400s and the gateway keeps serving; concurrent
requests are all answered; /api/v1/swarm lists the servers as `swarm status --json` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import openai
import pytest

from swarm.v1 import text_generation_pb2 as pb
from swarm.v1 import text_generation_pb2_grpc
from tests.integration.gateway.conftest import SPANS, Served

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

PROMPT = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
MAX_TOKENS = 24


def swarm_generate(served: Served, prompt: str, max_tokens: int, *flags: str) -> dict[str, Any]:
    """`swarm generate --json` (greedy) through the same swarm."""
    command = [sys.executable, "-m", "client.cli", "generate", "--initial-peers", *served.swarm.initial_peers,
               "--model", served.model_dir, "--prompt", prompt, "--max-new-tokens", str(max_tokens), "--json",
               *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "SWARM_LOG_LEVEL": "WARNING"})
    assert done.returncode == 0, done.stderr[-3000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.fixture(scope="module")
def reference(served: Served) -> dict[str, Any]:
    return swarm_generate(served, PROMPT, MAX_TOKENS, "--chat")


@pytest.fixture(scope="module")
def api(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{served.gateway.http}/v1", api_key="unused", max_retries=0,
                         timeout=600)


def ask(api: openai.OpenAI, **options: Any) -> Any:
    return api.chat.completions.create(model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": PROMPT}],
                                       temperature=0, max_tokens=MAX_TOKENS, **options)


def test_openai_client_gets_the_cli_answer(api: openai.OpenAI, reference: dict[str, Any]) -> None:
    assert [m.id for m in api.models.list()] == ["SmolLM2-135M-Instruct"]
    whole = ask(api)
    assert whole.choices[0].message.content == ANSWER == reference["text"]
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == len(reference["tokens"]) - 1  # no EOS
    began = time.perf_counter()
    chunks = [c.choices[0].delta.content or "" for c in ask(api, stream=True) if c.choices]
    elapsed = time.perf_counter() - began
    assert "".join(chunks) == ANSWER
    assert sum(1 for c in chunks if c) >= 5  # streamed token by token
    print(f"streamed {len(chunks)} chunks in {elapsed:.2f} s")


def test_plain_completion_equals_the_cli(api: openai.OpenAI, served: Served) -> None:
    prompt, tokens = "The capital of France is", 12
    expected = swarm_generate(served, prompt, tokens)
    got = api.completions.create(model="SmolLM2-135M-Instruct", prompt=prompt, max_tokens=tokens, temperature=0)
    assert got.choices[0].text == expected["text"]
    assert got.choices[0].text.startswith(" Paris")
    assert got.usage is not None and got.usage.completion_tokens == len(expected["tokens"])


def test_grpc_chat_tokens_equal_the_cli(served: Served, reference: dict[str, Any]) -> None:
    with grpc.insecure_channel(served.gateway.grpc) as channel:
        stub = text_generation_pb2_grpc.TextGenerationStub(channel)  # type: ignore[no-untyped-call]
        request = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=PROMPT)],
                                 sampling=pb.SamplingOptions(temperature=0, max_tokens=MAX_TOKENS))
        answers = list(stub.Chat(request, timeout=600))
    tokens = [t for a in answers for t in a.token_ids]
    assert tokens == reference["tokens"][: len(tokens)] and len(tokens) == len(reference["tokens"]) - 1
    assert "".join(a.text for a in answers) == ANSWER
    assert answers[-1].finish_reason == pb.FINISH_REASON_STOP


def test_bad_requests_then_concurrent_answers(api: openai.OpenAI, served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        ask(api, top_p=7)
    assert bad.value.body is not None and "top_p" in str(bad.value.body)
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="gpt-4o", prompt="hi")
    began = time.perf_counter()
    with ThreadPoolExecutor(3) as pool:
        texts = list(pool.map(lambda _: ask(api).choices[0].message.content, range(3)))
    print(f"3 concurrent chat requests answered in {time.perf_counter() - began:.2f} s")
    assert texts == [ANSWER] * 3


def test_swarm_api_lists_every_server_and_block(served: Served) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://{served.gateway.http}/api/v1/swarm", timeout=60) as response:
        body = json.loads(response.read())
    (model,) = body["models"]
    assert model["model"] == "SmolLM2-135M-Instruct" and model["num_blocks"] == 30 and model["complete"]
    servers = {s["address"]: s for s in model["servers"]}
    assert set(servers) == {p.address for p in served.swarm.servers}
    assert [servers[p.address]["blocks"] for p in served.swarm.servers] == [[s.start, s.end] for s in SPANS]
    assert all(s["reachable"] and s["ping_ms"] > 0 for s in servers.values())
    assert [b["online"] for b in model["blocks"]] == [1] * 30
    assert body["gateway"]["update_period_s"] == 2.0
