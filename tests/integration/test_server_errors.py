"""Bad input gets the right gRPC status and a clear message; the server serves others meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client.grpc_transport import GrpcInferenceStream
from client.grpc_transport import GrpcTransport
from node.push_client import PushClient
from swarm.codec import messages
from swarm.codec.tensors import DEFAULT_LIMITS
from swarm.errors import PeerRefused, PeerTimedOut, RemoteError, RemoteInvalidInput
from swarm.protocol import ForwardCall, InferenceOpen, InferenceStep, PushedStep
from swarm.records import BlockRange
from swarm.rpc import CHANNEL_OPTIONS, ChannelPool
from swarm.v1 import block_service_pb2 as pb
from swarm.v1 import block_service_pb2_grpc
from tests.integration.conftest import RunningSwarm

HIDDEN = 32


def _open(blocks: BlockRange = BlockRange(0, 2), max_length: int = 16, model: str = "tiny-llama",
          batch: int = 1) -> InferenceOpen:
    return InferenceOpen(model, blocks, batch, max_length, torch.float32, uuid.uuid4().hex, uuid.uuid4().hex)


def _step(tokens: int = 1, hidden: int = HIDDEN, dtype: torch.dtype = torch.float32, start: int = 0,
          step_id: int = 0) -> InferenceStep:
    return InferenceStep(step_id, torch.randn(1, tokens, hidden).to(dtype), start)


async def _raw_stream(address: str, requests: Iterable[object]) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = block_service_pb2_grpc.BlockServiceStub(channel)

        async def source() -> AsyncIterator[object]:
            for request in requests:
                yield request

        call = stub.Inference(source())
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
        return await call.code(), ""


@pytest.fixture()
async def pool() -> AsyncIterator[ChannelPool]:
    channels = ChannelPool()
    yield channels
    await channels.close()


async def _expect(pool: ChannelPool, address: str, open_: InferenceOpen, step: InferenceStep | None,
                  code: str, match: str) -> None:
    with pytest.raises(RemoteError) as info:
        stream = await GrpcInferenceStream.open(pool, address, open_, 5.0, DEFAULT_LIMITS)
        if step is not None:
            await stream.step(step, 5.0)
    assert info.value.code == code, info.value
    assert match in str(info.value), info.value


async def test_bad_requests_get_clear_statuses_while_others_are_served(
        llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    address = llama_swarm.servers[0].address
    good = await GrpcInferenceStream.open(pool, address, _open(max_length=64), 5.0, DEFAULT_LIMITS)
    position = 0

    async def good_step() -> None:
        nonlocal position
        out = await good.step(_step(start=position, step_id=position), 5.0)
        assert out.shape == (1, 1, HIDDEN) and torch.isfinite(out).all()
        position += 1

    cases = [
        (_open(), _step(hidden=HIDDEN + 1), "INVALID_ARGUMENT", f"[batch, tokens, {HIDDEN}]"),
        (_open(), _step(dtype=torch.bfloat16), "INVALID_ARGUMENT", "must be torch.float32"),
        (_open(max_length=4), _step(tokens=5), "FAILED_PRECONDITION", "max_length 4"),
        (_open(), _step(start=3), "FAILED_PRECONDITION", "holds only 0 tokens"),
        (_open(blocks=BlockRange(1, 4)), None, "NOT_FOUND", "holds blocks 0:2"),
        (_open(model="other-model"), None, "NOT_FOUND", "not 'other-model'"),
        (_open(batch=0), None, "INVALID_ARGUMENT", "batch_size must be"),
        (_open(max_length=5000), None, "RESOURCE_EXHAUSTED", "budget is 4096 tokens"),
        (replace(_open(), session_id="abc"), None, "INVALID_ARGUMENT", "32 lowercase hex digits"),
        (replace(_open(), push_capability="x" * 32), None, "INVALID_ARGUMENT", "push_capability must be"),
    ]
    for open_, step, code, match in cases:
        await _expect(pool, address, open_, step, code, match)
        await good_step()
    await good.close(5.0)


async def test_cache_budget_waits_then_says_what_was_asked(llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    address = llama_swarm.servers[1].address
    holder = await GrpcInferenceStream.open(pool, address, _open(BlockRange(2, 4), max_length=3000), 5.0,
                                        DEFAULT_LIMITS)
    # 5000 of 4096 tokens do not fit; the holder is neither idle for long nor another address's surplus
    await _expect(pool, address, _open(BlockRange(2, 4), max_length=2000), None, "RESOURCE_EXHAUSTED",
                  "asks for 2000 cache tokens and none came free in 0.5 s: 2000 asked, 1096 of 4096 free "
                  "on this server")
    # once the first session closes, the same request fits
    await holder.close(5.0)
    again = await GrpcInferenceStream.open(pool, address, _open(BlockRange(2, 4), max_length=2000), 5.0,
                                       DEFAULT_LIMITS)
    await again.close(5.0)


async def test_protocol_violations(llama_swarm: RunningSwarm) -> None:
    address = llama_swarm.servers[0].address
    step = messages.encode_inference_request(_step())
    code, details = await _raw_stream(address, [step])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "must start with an open" in details
    opening = messages.encode_inference_request(_open())
    code, details = await _raw_stream(address, [opening, opening])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already open" in details
    broken = messages.encode_inference_request(_step())
    broken.step.hidden_states.data = broken.step.hidden_states.data[:-3]
    code, details = await _raw_stream(address, [opening, broken])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs 128 bytes, got 125" in details
    code, details = await _raw_stream(address, [pb.InferenceRequest()])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no message" in details


async def test_push_to_unknown_or_closed_session(llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    address = llama_swarm.servers[0].address
    open_ = _open()
    stream = await GrpcInferenceStream.open(pool, address, open_, 5.0, DEFAULT_LIMITS)
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = block_service_pb2_grpc.BlockServiceStub(channel)
        # a push into the open session is answered on the session's own stream
        await stub.Push(messages.encode_push(PushedStep(open_.session_id, _step(), open_.push_capability)))
        result = await stream.receive(0, 5.0)
        assert result.hidden_states.shape == (1, 1, HIDDEN)
        # without the session's capability, a push is answered exactly like one to an unknown id
        answers = []
        for capability in ("", uuid.uuid4().hex):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Push(messages.encode_push(PushedStep(open_.session_id, _step(), capability)))
            answers.append((info.value.code(), info.value.details()))
        await stream.close(5.0)
        for session_id in (open_.session_id, "no-such-session"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Push(messages.encode_push(PushedStep(session_id, _step(), open_.push_capability)))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "unknown or closed" in (info.value.details() or "")
        assert answers == [(grpc.StatusCode.NOT_FOUND, f"no open session {open_.session_id!r} on this server "
                            "(unknown or closed)")] * 2


async def test_push_stream_feeds_a_session_then_rejects_an_unknown_one(
    llama_swarm: RunningSwarm, pool: ChannelPool
) -> None:
    address = llama_swarm.servers[0].address
    open_ = _open()
    stream = await GrpcInferenceStream.open(pool, address, open_, 5.0, DEFAULT_LIMITS)
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = block_service_pb2_grpc.BlockServiceStub(channel)
        call = stub.PushStream()
        for step_id in range(3):  # several steps over one call, each answered on the session
            pushed = PushedStep(open_.session_id, _step(start=step_id, step_id=step_id), open_.push_capability)
            await call.write(messages.encode_push(pushed))
            result = await stream.receive(step_id, 5.0)
            assert result.hidden_states.shape == (1, 1, HIDDEN)
        await call.done_writing()
        await call  # ended OK by the sender
        rejected = stub.PushStream()
        await rejected.write(messages.encode_push(PushedStep("no-such-session", _step())))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rejected
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "unknown or closed" in (info.value.details() or "")
    # the server keeps serving the session that was fed by the stream
    assert (await stream.step(_step(start=3, step_id=3), 5.0)).shape == (1, 1, HIDDEN)
    await stream.close(5.0)


async def test_idle_session_times_out(llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    stream = await GrpcInferenceStream.open(pool, llama_swarm.servers[2].address, _open(BlockRange(4, 6)), 5.0,
                                        DEFAULT_LIMITS)
    await asyncio.sleep(3.5)
    with pytest.raises(PeerTimedOut) as info:
        await stream.step(_step(), 5.0)
    assert info.value.code == "DEADLINE_EXCEEDED" and "idle" in str(info.value)


async def test_forward_rejects_bad_calls(llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    transport = GrpcTransport(DEFAULT_LIMITS, pool)
    address = llama_swarm.servers[0].address
    ok = await transport.forward(address, ForwardCall("tiny-llama", BlockRange(0, 2), (torch.randn(2, 3, HIDDEN),)),
                                 10.0)
    assert ok.shape == (2, 3, HIDDEN)
    bad = [
        (ForwardCall("tiny-llama", BlockRange(0, 2), (torch.randn(2, 3, 7),)), RemoteInvalidInput),
        (ForwardCall("tiny-llama", BlockRange(0, 2), (torch.ones(2, 3, HIDDEN, dtype=torch.int64),)),
         RemoteInvalidInput),
        (ForwardCall("tiny-llama", BlockRange(2, 4), (torch.randn(1, 3, HIDDEN),)), PeerRefused),
        (ForwardCall("tiny-llama", BlockRange(0, 2), (torch.randn(1, 3, HIDDEN), torch.ones(1, 4))),
         RemoteInvalidInput),
    ]
    for call, error_type in bad:
        with pytest.raises(RemoteError) as info:
            await transport.forward(address, call, 10.0)
        # the typed error, carrying the peer it came from
        assert type(info.value) is error_type and info.value.peer == address, info.value


async def test_info_health_and_reflection(llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    address = llama_swarm.servers[0].address
    info = await GrpcTransport(DEFAULT_LIMITS, pool).info(address, 5.0)
    assert info.free_cache_tokens <= 4096 and len(info.signed_record) > 64
    async with grpc.aio.insecure_channel(address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="swarm.v1.BlockService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services = [s.name async for r in reflection.ServerReflectionInfo(ask())
                    for s in r.list_services_response.service]
        assert "swarm.v1.BlockService" in services


def test_metrics_count_steps_and_errors(llama_swarm: RunningSwarm) -> None:
    import re
    import urllib.request

    server = llama_swarm.servers[0]
    port = re.search(r"metrics at http://[\d.]+:(\d+)/metrics", server.text()).group(1)  # type: ignore[union-attr]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = dict(re.findall(r'^(swarm_\w+(?:\{[^}]*\})?) (\S+)$', text, re.M))
    # the tests above ran steps and bad requests against this server
    assert float(values["swarm_inference_steps_total"]) > 0
    assert float(values['swarm_errors_total{code="INVALID_ARGUMENT"}']) > 0
    assert float(values['swarm_errors_total{code="NOT_FOUND"}']) > 0
    assert float(values["swarm_cache_tokens_free"]) == 4096
    # the compute thread ran steps (and the module's forward calls), and nothing waits now
    assert float(values['swarm_compute_busy_seconds_total{kind="inference"}']) > 0
    assert float(values['swarm_compute_busy_seconds_total{kind="batch"}']) > 0
    assert float(values["swarm_compute_queued"]) == 0


async def test_event_loop_keeps_serving_during_long_compute(llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    from swarm.rpc import ping

    transport = GrpcTransport(DEFAULT_LIMITS, pool)
    address = llama_swarm.servers[1].address
    big = ForwardCall("tiny-llama", BlockRange(2, 4), (torch.randn(8, 2048, HIDDEN),))
    began = asyncio.get_running_loop().time()
    job = asyncio.create_task(transport.forward(address, big, 60.0))
    await asyncio.sleep(0.05)  # the forward is computing now
    pings = []
    while not job.done():
        pings.append(await ping(pool, address, 5.0))
        await asyncio.sleep(0.02)
    took = asyncio.get_running_loop().time() - began
    assert (await job).shape == (8, 2048, HIDDEN)
    # health checks were answered while the torch work ran, each far faster than it
    print(f"\nforward took {took:.2f} s; {len(pings)} pings answered meanwhile, slowest {max(pings) * 1000:.1f} ms")
    assert len(pings) >= 2, (took, pings)
    assert max(pings) < took / 3, (took, pings)


async def test_push_client_reports_a_rejected_stream(llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    address = llama_swarm.servers[0].address
    open_ = _open()
    stream = await GrpcInferenceStream.open(pool, address, open_, 5.0, DEFAULT_LIMITS)
    pusher = PushClient(5.0)
    try:
        for step_id in range(2):
            pushed = PushedStep(open_.session_id, _step(start=step_id, step_id=step_id), open_.push_capability)
            assert await pusher.push("owner", address, pushed)
            assert (await stream.receive(step_id, 5.0)).hidden_states.shape == (1, 1, HIDDEN)
        # the server ends a stream into an unknown session; the pusher sees it at a later write
        outcomes = []
        for _ in range(20):
            outcomes.append(await pusher.push("owner", address, PushedStep("no-such-session", _step())))
            if not outcomes[-1]:
                break
            await asyncio.sleep(0.05)
        assert outcomes[-1] is False
        await pusher.release("owner")  # ends the session's healthy stream too, politely
        assert (await stream.step(_step(start=2, step_id=2), 5.0)).shape == (1, 1, HIDDEN)
    finally:
        await pusher.close()
        await stream.close(5.0)


async def test_a_taken_port_fails_to_bind() -> None:
    from swarm.rpc import SERVER_OPTIONS

    first = grpc.aio.server(options=SERVER_OPTIONS)
    port = first.add_insecure_port("127.0.0.1:0")
    await first.start()
    try:
        # grpcio's default SO_REUSEPORT would let this one start and take half the connections
        with pytest.raises(RuntimeError, match="Failed to bind"):
            grpc.aio.server(options=SERVER_OPTIONS).add_insecure_port(f"127.0.0.1:{port}")
    finally:
        await first.stop(None)
