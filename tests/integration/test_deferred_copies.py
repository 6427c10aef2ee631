"""defer_copy on real servers: a middle server holds its copies and sends them batched, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import torch

from client.grpc_transport import GrpcInferenceStream
from swarm.codec import messages
from swarm.codec.tensors import DEFAULT_LIMITS
from swarm.protocol import InferenceOpen, InferenceOpened, InferenceResult, InferenceResults, InferenceStep, NextHop
from swarm.records import BlockRange
from swarm.rpc import CHANNEL_OPTIONS, ChannelPool
from swarm.v1 import block_service_pb2_grpc
from tests.integration.conftest import RunningSwarm

HIDDEN = 32


def _open(blocks: BlockRange) -> InferenceOpen:
    return InferenceOpen("tiny-llama", blocks, 1, 32, torch.float32, uuid.uuid4().hex, uuid.uuid4().hex)


@pytest.fixture()
async def pool() -> AsyncIterator[ChannelPool]:
    pool = ChannelPool()
    yield pool
    await pool.close()


async def test_a_middle_server_holds_copies_and_sends_them_batched_in_step_order(
        llama_swarm: RunningSwarm, pool: ChannelPool) -> None:
    first, second = llama_swarm.servers[0].address, llama_swarm.servers[1].address
    next_open = _open(BlockRange(2, 4))
    pushed_to = await GrpcInferenceStream.open(pool, second, next_open, 5.0, DEFAULT_LIMITS)
    hop = NextHop(second, next_open.session_id, next_open.push_capability)
    inputs = torch.randn(1, 14, HIDDEN, generator=torch.Generator().manual_seed(0))
    async with grpc.aio.insecure_channel(first, options=CHANNEL_OPTIONS) as channel:
        call = block_service_pb2_grpc.BlockServiceStub(channel).Inference()
        await call.write(messages.encode_inference_request(_open(BlockRange(0, 2))))
        assert isinstance(messages.decode_inference_response(await call.read()), InferenceOpened)

        async def send(position: int, defer: bool) -> None:
            step = InferenceStep(position, inputs[:, position:position + 1], position, next_hops=(hop,),
                                 defer_copy=defer)
            await call.write(messages.encode_inference_request(step))
            assert (await pushed_to.receive(position, 5.0)).step_id == position  # the push went on at once

        async def answer() -> tuple[int, ...]:
            reply = messages.decode_inference_response(await asyncio.wait_for(call.read(), 5.0))
            results = reply.results if isinstance(reply, InferenceResults) else (reply,)
            assert all(isinstance(r, InferenceResult) and r.hidden_states.shape == (1, 1, HIDDEN) for r in results)
            return tuple(r.step_id for r in results)  # type: ignore[union-attr]

        loop = asyncio.get_running_loop()
        for position in range(3):
            await send(position, True)
        began = loop.time()
        assert await answer() == (0, 1, 2)  # held, then sent together once no step came for a while
        assert loop.time() - began >= 0.1
        for position in range(3, 11):
            await send(position, True)
        assert await answer() == tuple(range(3, 11))  # 8 held: sent at once
        await send(11, True)
        await send(12, True)
        await send(13, False)  # an answer not held takes the held ones along, in order
        assert await answer() == (11, 12, 13)
        await call.done_writing()
    await pushed_to.close(5.0)
