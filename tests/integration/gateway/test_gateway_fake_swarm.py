"""The gateway in-process over a fake swarm model (tests/integration/gateway/fake_model.py).

Fast (no model, no servers): the official `openai` client, raw HTTP and gRPC against a
real gateway on 127.0.0.1 port 0. Checks the OpenAI shapes (whole and streamed), stop
strings, max_tokens, seeds, concurrency from one process, errors in OpenAI's format
(400/404/503) after which the gateway keeps serving, gRPC statuses, and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import openai
import pytest

from gateway.config import GatewayConfig
from gateway.server import Gateway
from swarm.v1 import text_generation_pb2 as pb
from swarm.v1 import text_generation_pb2_grpc
from tests.integration.gateway.fake_model import ANSWER, STEP_S, ByteTokenizer, FakeModel

MAX_TOKENS_LIMIT = 64


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    config = GatewayConfig(port=0, grpc_port=0, max_concurrent=4, max_tokens_limit=MAX_TOKENS_LIMIT,
                           default_max_tokens=48)
    running = Gateway(config, FakeModel(), ByteTokenizer(), ["fake-model", "default"])
    asyncio.run_coroutine_threadsafe(running.start(), loop).result(30)
    yield running
    asyncio.run_coroutine_threadsafe(running.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="module")
def api(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{gateway.http_address}/v1", api_key="none", max_retries=0)


def chat(api: openai.OpenAI, text: str = "Bonjour ?", **options: Any) -> Any:
    """A chat request, greedy unless `options` say otherwise (OpenAI's default temperature is 1)."""
    options.setdefault("temperature", 0)
    return api.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": text}],
                                       **options)


def post(gateway: Gateway, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://{gateway.http_address}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_chat_whole_and_streamed(api: openai.OpenAI) -> None:
    whole = chat(api)
    assert whole.choices[0].message.content == ANSWER
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == len(ANSWER.encode())
    deltas = [c.choices[0].delta.content for c in chat(api, stream=True) if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == ANSWER
    assert len(deltas) > 10  # token by token, not one block at the end
    assert not any("\ufffd" in d for d in deltas)  # "ç" and "è" span two tokens: sent whole


def test_streamed_usage_and_roles(api: openai.OpenAI) -> None:
    chunks = list(chat(api, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(ANSWER.encode())
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("stop,expected", [(["va"], "Bonjour, ça "), ("?", "Bonjour, ça va "),
                                           (["zzz", "ès"], "Bonjour, ça va ? Tr"), (["absent"], ANSWER)])
def test_completions_stop_strings(api: openai.OpenAI, stop: Any, expected: str) -> None:
    whole = api.completions.create(model="fake-model", prompt="Say hello", stop=stop, temperature=0)
    assert whole.choices[0].text == expected
    assert whole.choices[0].finish_reason == "stop"
    streamed = api.completions.create(model="fake-model", prompt="Say hello", stop=stop, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected


def test_max_tokens_ends_with_length(api: openai.OpenAI) -> None:
    whole = api.completions.create(model="default", prompt="Say hello", max_tokens=5, temperature=0)
    assert whole.choices[0].text == ANSWER[:5]
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.prompt_tokens == len(b"Say hello")


def test_seeded_sampling_repeats(api: openai.OpenAI) -> None:
    first = [chat(api, temperature=2.0, seed=seed).choices[0].message.content for seed in (1, 2, 3)]
    again = [chat(api, temperature=2.0, seed=seed).choices[0].message.content for seed in (1, 2, 3)]
    assert first == again
    assert any(text != ANSWER for text in first)  # at temperature 2 the runner-up gets drawn


def test_concurrent_requests_overlap(api: openai.OpenAI) -> None:
    began = time.perf_counter()
    chat(api)
    single = time.perf_counter() - began
    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: chat(api).choices[0].message.content, range(4)))
    together = time.perf_counter() - began
    assert answers == [ANSWER] * 4
    assert together < 2.5 * single, (single, together)  # served side by side, not one after another
    assert single > len(ANSWER.encode()) * STEP_S


BAD_BODIES = [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"messages": []}', "messages", "non-empty list"),
    (b'{"messages": [{"role": "robot", "content": "hi"}]}', "messages[0].role", "must be one of"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content", "string"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 3}', "temperature", "[0, 2]"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature", "number"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}', "top_p", "(0, 1]"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens", "[1, 64]"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}', "max_tokens", "[1, 64]"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": true}', "max_tokens", "integer"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}', "stop", "at most 4"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": [""]}', "stop", "non-empty"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}', "seed", "integer"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', "n", "not supported"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1}', "presence_penalty",
     "not supported"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream", "boolean"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": true}}',
     "stream_options", "only allowed"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}', "frobnicate", "unrecognized"),
]


@pytest.mark.parametrize("body,param,message", BAD_BODIES)
def test_bad_chat_requests_are_400_in_openai_format(gateway: Gateway, body: bytes, param: str | None,
                                                    message: str) -> None:
    status, answer = post(gateway, "/v1/chat/completions", body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    assert message in answer["error"]["message"]


@pytest.mark.parametrize("body,param", [
    (b'{"prompt": ""}', "prompt"), (b'{"prompt": ["a", "b"]}', "prompt"), (b'{"prompt": [1, 999]}', "prompt"),
    (b'{"prompt": "hi", "echo": true}', "echo"), (b'{"prompt": "hi", "max_tokens": 5000}', "max_tokens"),
])
def test_bad_completion_requests_are_400(gateway: Gateway, body: bytes, param: str) -> None:
    status, answer = post(gateway, "/v1/completions", body)
    assert (status, answer["error"]["param"]) == (400, param), answer


def test_errors_through_the_openai_client_then_still_serving(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        chat(api, temperature=-1)
    with pytest.raises(openai.InternalServerError) as failed:  # the swarm cannot serve: 503
        chat(api, "FAIL please")
    assert failed.value.status_code == 503 and "no live server" in str(failed.value)
    with pytest.raises(openai.InternalServerError):
        list(chat(api, "FAIL please", stream=True))  # before the first byte: still an HTTP error
    assert chat(api).choices[0].message.content == ANSWER


def test_a_prompt_past_the_context_is_refused(gateway: Gateway) -> None:
    body = json.dumps({"prompt": "x" * 4090, "max_tokens": 10}).encode()
    status, answer = post(gateway, "/v1/completions", body)
    assert status == 400 and answer["error"]["code"] == "context_length_exceeded"
    assert "4096" in answer["error"]["message"]


def test_a_client_that_leaves_mid_stream_stops_its_generation(gateway: Gateway) -> None:
    layers = gateway.engine.model.layers
    request = urllib.request.Request(f"http://{gateway.http_address}/v1/completions", headers={
        "Content-Type": "application/json"}, data=b'{"prompt": "hi", "stream": true, "temperature": 0}')
    with urllib.request.urlopen(request, timeout=30) as response:
        for _ in range(3):
            assert response.readline().startswith(b"data: ")
            response.readline()
        session = layers.sessions[-1]
    time.sleep(20 * STEP_S)
    steps = session.steps
    time.sleep(20 * STEP_S)
    assert session.steps == steps < len(ANSWER.encode())  # stopped, well before the end


def test_unknown_path_and_models(gateway: Gateway, api: openai.OpenAI) -> None:
    assert [m.id for m in api.models.list()] == ["fake-model"]
    status, answer = post(gateway, "/v1/embeddings", b"{}")
    assert status == 404 and answer["error"]["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def stub(gateway: Gateway) -> Iterator[text_generation_pb2_grpc.TextGenerationStub]:
    with grpc.insecure_channel(gateway.grpc_address) as channel:
        yield text_generation_pb2_grpc.TextGenerationStub(channel)  # type: ignore[no-untyped-call]


def test_grpc_generate_and_chat(stub: text_generation_pb2_grpc.TextGenerationStub) -> None:
    greedy = pb.SamplingOptions(temperature=0)
    for call in (stub.Generate(pb.GenerateRequest(prompt="hi", sampling=greedy)),
                 stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="hi")], sampling=greedy))):
        answers = list(call)
        assert [t for a in answers for t in a.token_ids] == list(ANSWER.encode())
        assert "".join(a.text for a in answers) == ANSWER
        assert answers[-1].finish_reason == pb.FINISH_REASON_STOP
        assert answers[-1].usage.completion_tokens == len(ANSWER.encode())
    limited = list(stub.Generate(pb.GenerateRequest(prompt="hi", sampling=pb.SamplingOptions(max_tokens=3, stop=["zz"]))))
    assert limited[-1].finish_reason == pb.FINISH_REASON_LENGTH
    assert sum(len(a.token_ids) for a in limited) == 3


@pytest.mark.parametrize("request_,code", [
    (pb.GenerateRequest(prompt=""), grpc.StatusCode.INVALID_ARGUMENT),
    (pb.GenerateRequest(prompt="hi", sampling=pb.SamplingOptions(top_p=1.5)), grpc.StatusCode.INVALID_ARGUMENT),
    (pb.GenerateRequest(prompt="hi", sampling=pb.SamplingOptions(max_tokens=0)), grpc.StatusCode.INVALID_ARGUMENT),
    (pb.GenerateRequest(prompt="hi", model="other"), grpc.StatusCode.NOT_FOUND),
    (pb.GenerateRequest(prompt="FAIL"), grpc.StatusCode.UNAVAILABLE),
])
def test_grpc_errors(stub: text_generation_pb2_grpc.TextGenerationStub, request_: pb.GenerateRequest,
                     code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(request_))
    assert error.value.code() == code, error.value.details()
    chat_error = pytest.raises(grpc.RpcError)
    with chat_error:
        list(stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="nobody", content="x")])))
    assert chat_error.excinfo is not None and chat_error.excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_count_requests_tokens_and_first_tokens(gateway: Gateway, api: openai.OpenAI) -> None:
    chat(api)
    with urllib.request.urlopen(f"http://{gateway.http_address}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'swarm_gateway_requests_total{api="chat",status="200"}' in text
    assert 'swarm_gateway_requests_total{api="chat",status="400"}' in text
    assert 'swarm_gateway_tokens_total{kind="completion"}' in text
    assert 'swarm_gateway_time_to_first_token_seconds_count{api="chat"}' in text
    assert "_created" not in text
