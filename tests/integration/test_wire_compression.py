"""Compressed hidden states against real servers: negotiated per session and per Forward,
carried by server-to-server pushes, refused with INVALID_ARGUMENT when malformed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import torch

from client.grpc_transport import GrpcInferenceStream, GrpcTransport
from swarm.codec import messages
from swarm.codec.tensors import DEFAULT_LIMITS
from swarm.protocol import Compression, ForwardCall, InferenceOpen, InferenceStep, NextHop
from swarm.records import BlockRange
from swarm.rpc import CHANNEL_OPTIONS, ChannelPool
from swarm.v1 import block_service_pb2 as pb
from swarm.v1 import block_service_pb2_grpc, tensor_pb2
from tests.integration.conftest import RunningSwarm, start_swarm

HIDDEN = 32
MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    running = start_swarm(tmp_path_factory.mktemp("wire"), "llama", ["0:2", "2:4"], "--cache-tokens", "1024")
    yield running
    running.swarm.stop_all()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


async def _raw_forward(address: str, call: ForwardCall) -> tuple[list[int], torch.Tensor]:
    """The answer's header compressions and its tensor, read off the wire."""
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        responses = block_service_pb2_grpc.BlockServiceStub(channel).Forward(iter(messages.encode_forward_call(call)))
        rest = [message async for message in responses]
        first = rest[0]

        async def replay() -> AsyncIterator[object]:
            for message in rest:
                yield message

        (out,) = await messages.decode_tensor_stream(replay())
        return [t.compression for t in first.header.tensors], out


async def test_forward_answers_with_the_compression_asked_for(swarm: RunningSwarm) -> None:
    address = swarm.servers[0].address
    x = torch.randn(2, 5, HIDDEN)
    plain = ForwardCall(MODEL, BlockRange(0, 2), (x,))
    kinds, exact = await _raw_forward(address, plain)
    assert kinds == [tensor_pb2.COMPRESSION_NONE]
    for compression, tolerance in ((Compression.FLOAT16, 2e-3), (Compression.BLOCKWISE_8BIT, 5e-2)):
        kinds, out = await _raw_forward(address, ForwardCall(MODEL, BlockRange(0, 2), (x,), compression=compression))
        assert kinds == [int(tensor_pb2.Compression.Value(f"COMPRESSION_{compression.name}"))]
        assert 0 < _relative(out, exact) < tolerance


async def test_session_results_and_pushes_carry_the_session_compression(swarm: RunningSwarm,
                                                                        pool: ChannelPool) -> None:
    first, second = (s.address for s in swarm.servers)
    x = torch.randn(1, 3, HIDDEN)
    outputs = {}
    for compression in (Compression.NONE, Compression.BLOCKWISE_8BIT):
        ids = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(2)]
        opens = [InferenceOpen(MODEL, blocks, 1, 16, torch.float32, sid, cap, compression=compression)
                 for blocks, (sid, cap) in zip((BlockRange(0, 2), BlockRange(2, 4)), ids)]
        head = await GrpcInferenceStream.open(pool, first, opens[0], 5.0, DEFAULT_LIMITS)
        tail = await GrpcInferenceStream.open(pool, second, opens[1], 5.0, DEFAULT_LIMITS)
        assert head.compression is compression
        await head.send(InferenceStep(0, x, 0, next_hops=(NextHop(second, *ids[1]),)), 5.0)
        mid = await head.receive(0, 5.0)
        end = await tail.receive(0, 5.0)  # pushed by the first server: decoded and answered
        assert not mid.push_failed
        assert mid.compression is compression and end.compression is compression
        outputs[compression] = end.hidden_states
        await head.close(5.0)
        await tail.close(5.0)
    assert 0 < _relative(outputs[Compression.BLOCKWISE_8BIT], outputs[Compression.NONE]) < 0.1


async def test_transport_policy_asks_float16_for_float32(swarm: RunningSwarm, pool: ChannelPool) -> None:
    transport = GrpcTransport(DEFAULT_LIMITS, pool, "auto")
    request = InferenceOpen(MODEL, BlockRange(0, 2), 1, 16, torch.float32, uuid.uuid4().hex, uuid.uuid4().hex)
    stream = await transport.open_inference(swarm.servers[0].address, request, 5.0)
    assert stream.compression is Compression.FLOAT16
    await stream.send(InferenceStep(0, torch.randn(1, 2, HIDDEN)), 5.0)
    assert (await stream.receive(0, 5.0)).compression is Compression.FLOAT16
    await stream.close(5.0)
    with pytest.raises(ValueError):
        GrpcTransport(DEFAULT_LIMITS, pool, "zip")


async def test_malformed_compressed_step_is_invalid_argument(swarm: RunningSwarm) -> None:
    request = InferenceOpen(MODEL, BlockRange(0, 2), 1, 16, torch.float32, uuid.uuid4().hex, "")
    bad = pb.InferenceRequest(step=pb.InferenceStep(step_id=0, hidden_states=tensor_pb2.Tensor(
        dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1, 1, HIDDEN], compression=tensor_pb2.COMPRESSION_FLOAT16,
        data=bytes(4 * HIDDEN))))  # float32-sized bytes under a FLOAT16 header

    async def source() -> AsyncIterator[object]:
        yield messages.encode_inference_request(request)
        yield bad

    async with grpc.aio.insecure_channel(swarm.servers[0].address, options=CHANNEL_OPTIONS) as channel:
        call = block_service_pb2_grpc.BlockServiceStub(channel).Inference(source())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"needs {2 * HIDDEN} bytes, got {4 * HIDDEN}" in (info.value.details() or "")
