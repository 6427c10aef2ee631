"""Talking to block servers over gRPC: the client's only contact with grpc.

One channel per server address, reused. Every call has a timeout. `grpc.aio.AioRpcError`
and timeouts are mapped to `swarm.errors` here and nowhere else: PeerUnavailable when the
server is unreachable, died, hung or is draining (worth failing over), RemoteError with
the status name otherwise (the request itself was bad).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm.codec import messages
from swarm.codec.limits import TensorLimits
from swarm.errors import PeerUnavailable, RemoteError, SwarmError
from swarm.protocol import (
    ForwardCall,
    InferenceClose,
    InferenceClosed,
    InferenceOpen,
    InferenceOpened,
    InferenceResult,
    InferenceStep,
    ServerInfo,
)
from swarm.v1 import block_service_pb2_grpc

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 512 << 20
"""gRPC message cap on client channels (a long prompt's hidden states exceed 4 MB)."""

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # fail fast on a dead peer instead of waiting for TCP timeouts
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.enable_retries", 0),
)

_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
"""Statuses after which another server may well succeed."""

T = TypeVar("T")


def status_error(code: grpc.StatusCode, details: str | None, peer: str, what: str) -> SwarmError:
    """The swarm error for a call to `peer` that ended with status `code`."""
    message = f"{what} on {peer} failed: {code.name}: {details}"
    if code in _UNAVAILABLE_CODES or code is grpc.StatusCode.OK:
        # OK here means the server ended the stream before answering
        return PeerUnavailable(message, code=code.name, peer=peer)
    return RemoteError(message, code=code.name, peer=peer)


def map_rpc_error(error: BaseException, peer: str, what: str) -> SwarmError:
    """The swarm error for a failed call to `peer`."""
    if isinstance(error, grpc.aio.AioRpcError):
        return status_error(error.code(), error.details(), peer, what)
    if isinstance(error, TimeoutError):
        return PeerUnavailable(f"{what} on {peer} timed out", code="DEADLINE_EXCEEDED", peer=peer)
    if isinstance(error, SwarmError):
        return error
    return PeerUnavailable(f"{what} on {peer} failed: {type(error).__name__}: {error}", peer=peer)


@contextlib.contextmanager
def _rpc_errors(peer: str, what: str) -> Iterator[None]:
    try:
        yield
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        raise map_rpc_error(error, peer, what) from error


class ChannelPool:
    """One grpc.aio channel per address, created in (and bound to) the running loop."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    def stub(self, address: str) -> block_service_pb2_grpc.BlockServiceStub:
        return block_service_pb2_grpc.BlockServiceStub(self.channel(address))  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


async def _timed(awaitable: Awaitable[T], timeout: float) -> T:
    return await asyncio.wait_for(awaitable, timeout)


class InferenceStream:
    """An open Inference call to one server: a KV-cache session over some blocks."""

    def __init__(self, call: Any, address: str, limits: TensorLimits, opened: InferenceOpened) -> None:
        self._call = call
        self.address = address
        self.server_id = opened.server_id
        self._limits = limits

    @classmethod
    async def open(
        cls, pool: ChannelPool, address: str, request: InferenceOpen, timeout: float,
        limits: TensorLimits,
    ) -> InferenceStream:
        call = pool.stub(address).Inference()
        with _rpc_errors(address, f"opening session for blocks {request.blocks}"):
            try:
                await _timed(call.write(messages.encode_inference_request(request)), timeout)
                reply = messages.decode_inference_response(await _timed(call.read(), timeout), limits)
            except BaseException:
                call.cancel()
                raise
        if reply is grpc.aio.EOF or not isinstance(reply, InferenceOpened):
            call.cancel()
            raise PeerUnavailable(f"{address} did not open the session", peer=address)
        return cls(call, address, limits, reply)

    async def send(self, step: InferenceStep, timeout: float) -> None:
        """Sends a step without waiting for its result."""
        what = f"step {step.step_id}"
        with _rpc_errors(self.address, what):
            try:
                await _timed(self._call.write(messages.encode_inference_request(step)), timeout)
            except asyncio.InvalidStateError:
                raise await self._ended(what, timeout) from None

    async def receive(self, step_id: int, timeout: float) -> InferenceResult:
        """The result of step `step_id` (sent by us or pushed by the previous server)."""
        what = f"step {step_id}"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with _rpc_errors(self.address, what):
                left = deadline - asyncio.get_running_loop().time()
                message = await _timed(self._call.read(), max(left, 0.0))
                if message is grpc.aio.EOF:
                    raise await self._ended(what, timeout)
                reply = messages.decode_inference_response(message, self._limits)
            # a step pushed twice (its first pusher died after pushing and was replaced)
            # is answered twice: skip the stale copy
            if not (isinstance(reply, InferenceResult) and reply.step_id < step_id):
                break
        if not isinstance(reply, InferenceResult) or reply.step_id != step_id:
            raise PeerUnavailable(f"{self.address} answered step {step_id} out of order", peer=self.address)
        return reply

    async def next_result(self) -> InferenceResult:
        """The next result on the stream, whatever its step (no timeout: readers wait)."""
        what = "next result"
        with _rpc_errors(self.address, what):
            message = await self._call.read()
            if message is grpc.aio.EOF:
                raise await self._ended(what, 10.0)
            reply = messages.decode_inference_response(message, self._limits)
        if not isinstance(reply, InferenceResult):
            raise PeerUnavailable(f"{self.address} sent {type(reply).__name__} instead of a result",
                                  peer=self.address)
        return reply

    async def step(self, step: InferenceStep, timeout: float) -> torch.Tensor:
        """Sends a step and returns its output hidden states."""
        await self.send(step, timeout)
        return (await self.receive(step.step_id, timeout)).hidden_states

    async def _ended(self, what: str, timeout: float) -> SwarmError:
        """The error for a call the server has ended: read its status."""
        code = await _timed(self._call.code(), timeout)
        return status_error(code, await self._call.details(), self.address, what)

    async def close(self, timeout: float) -> None:
        """Closes politely; a server that is already gone is not an error here."""
        try:
            await _timed(self._call.write(messages.encode_inference_request(InferenceClose())), timeout)
            reply = await _timed(self._call.read(), timeout)
            if reply is not grpc.aio.EOF and not isinstance(
                messages.decode_inference_response(reply, self._limits), InferenceClosed
            ):
                logger.debug("%s answered close with something else", self.address)
            await _timed(self._call.done_writing(), timeout)
        except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError, SwarmError) as error:
            logger.debug("closing session on %s: %s", self.address, error)
        finally:
            self._call.cancel()

    def abort(self) -> None:
        self._call.cancel()


async def forward(
    pool: ChannelPool, address: str, call: ForwardCall, timeout: float, limits: TensorLimits,
    backward: bool = False,
) -> torch.Tensor:
    """A stateless Forward (or Backward) call; returns its one output tensor."""
    stub = pool.stub(address)
    method = stub.Backward if backward else stub.Forward
    what = f"{'backward' if backward else 'forward'} through blocks {call.blocks}"

    async def requests() -> AsyncIterator[Any]:
        for message in messages.encode_forward_call(call, backward=backward):
            yield message

    with _rpc_errors(address, what):
        responses = method(requests(), timeout=timeout)
        (out,) = await messages.decode_tensor_stream(responses, limits)
    return out


async def server_info(pool: ChannelPool, address: str, timeout: float) -> ServerInfo:
    with _rpc_errors(address, "info"):
        reply = await pool.stub(address).Info(messages.info_request(), timeout=timeout)
    return messages.decode_info(reply)


async def ping(pool: ChannelPool, address: str, timeout: float) -> float:
    """Round-trip time in seconds of a health check (the cheapest call a server answers)."""
    stub = health_pb2_grpc.HealthStub(pool.channel(address))
    began = time.perf_counter()
    with _rpc_errors(address, "ping"):
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return time.perf_counter() - began
