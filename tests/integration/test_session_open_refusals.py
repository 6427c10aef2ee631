"""A session open that the server ends before reading it surfaces the server's status.

A server that refuses a call (here: the swarm token check, `swarm.rpc.TokenCheck`) ends it
at once; the client's write of the open message may then find the call already finished.
grpc.aio says "RPC already finished." for that write, and the client used to take it for
a dead server: it failed over and banned the only server of its blocks, so a wrong token
ended in NoRoute instead of "wrong swarm token" (seen in tests/adversarial under load).
Real gRPC servers on 127.0.0.1, in this process; many opens, so that both orders of the
race (write first, status first) occur.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import torch

from client import grpc_transport
from client.grpc_transport import GrpcInferenceStream
from swarm.codec.tensors import DEFAULT_LIMITS
from swarm.errors import PeerUnavailable, Unauthenticated
from swarm.protocol import InferenceOpen
from swarm.records import BlockRange
from swarm.rpc import ChannelPool, make_server
from swarm.security import RpcSecurity

OPENS = 40


async def _ends_at_once(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    """An Inference handler that ends the call (status OK) without reading or answering."""
    return
    yield b""  # (an async generator: the handler of a streaming reply)


async def _server(security: RpcSecurity) -> tuple[grpc.aio.Server, str]:
    server = make_server(security)
    handler = grpc.method_handlers_generic_handler(
        "swarm.v1.BlockService", {"Inference": grpc.stream_stream_rpc_method_handler(_ends_at_once)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _open() -> InferenceOpen:
    return InferenceOpen("m", BlockRange(0, 1), 1, 16, torch.float32, "a" * 32, "b" * 32)


async def test_a_refused_open_raises_the_servers_refusal_every_time() -> None:
    server, address = await _server(RpcSecurity(swarm_token="right"))
    pool = ChannelPool(RpcSecurity(swarm_token="wrong"))
    try:
        for _ in range(OPENS):
            with pytest.raises(Unauthenticated, match="wrong swarm token"):
                await GrpcInferenceStream.open(pool, address, _open(), 5.0, DEFAULT_LIMITS)
    finally:
        await pool.close()
        await server.stop(None)


async def test_a_refusal_that_arrives_before_the_open_is_written_is_still_the_refusal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a loaded client: each of its awaits starts 50 ms late, so the server's status is in
    # before the open is written (the order that made the write fail "RPC already finished")
    real = grpc_transport._timed

    async def late(awaitable: Any, timeout: float) -> Any:
        await asyncio.sleep(0.05)
        return await real(awaitable, timeout)

    monkeypatch.setattr(grpc_transport, "_timed", late)
    server, address = await _server(RpcSecurity(swarm_token="right"))
    pool = ChannelPool(RpcSecurity(swarm_token="wrong"))
    try:
        for _ in range(3):
            with pytest.raises(Unauthenticated, match="wrong swarm token"):
                await GrpcInferenceStream.open(pool, address, _open(), 5.0, DEFAULT_LIMITS)
    finally:
        await pool.close()
        await server.stop(None)


async def test_an_open_the_server_ends_without_a_word_is_a_peer_error_not_a_hang() -> None:
    server, address = await _server(RpcSecurity())
    pool = ChannelPool()
    try:
        for _ in range(OPENS // 4):
            with pytest.raises(PeerUnavailable):
                await GrpcInferenceStream.open(pool, address, _open(), 5.0, DEFAULT_LIMITS)
    finally:
        await pool.close()
        await server.stop(None)
