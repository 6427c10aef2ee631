"""The real `Transport`: block-server calls over gRPC, the client's only contact with grpc.

Channels, options, the ping and the status -> error mapping come from `swarm.rpc`; this
module adds the calls themselves (an Inference stream, Forward/Backward, Info) with a
timeout on every await, and the wire compression of hidden states: a session or a
Forward asks for the one `swarm.codec.compression.policy` picks (unless the request
names one); a training pass (a Forward with a pass_id, and every Backward) never does, so
that gradients travel exact (float16 would flush small ones to zero), the server's kept
graph matches the Backward's inputs, and fine-tuning stays bit-for-bit what it was. A failed call surfaces as a typed `swarm.errors` error with the
peer's address, never as `grpc.aio.AioRpcError`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TypeVar

import grpc
import torch

from client.verification import BadOutput
from swarm.codec import messages
from swarm.codec.compression import policy
from swarm.codec.limits import TensorLimits
from swarm.errors import PeerUnavailable, SwarmError
from swarm.protocol import (
    Compression,
    ForwardCall,
    InferenceClose,
    InferenceClosed,
    InferenceOpen,
    InferenceOpened,
    InferenceResponse,
    InferenceResult,
    InferenceResults,
    InferenceStep,
    ServerInfo,
)
from swarm.rpc import CALL_FAILURES, ChannelPool, call_failure, error_from_status, ping, rpc_errors
from swarm.write_watch import WriteWatches

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def _timed(awaitable: Awaitable[T], timeout: float) -> T:
    # a timeout scope, not wait_for: no task per call (a write starts at once, a read that
    # has its message returns without a turn of the loop)
    async with asyncio.timeout(timeout):
        return await awaitable


async def _status_error(call: Any, address: str, what: str, timeout: float) -> SwarmError:
    """The error for a call the server has ended: its status says why."""
    code = await _timed(call.code(), timeout)
    return error_from_status(code, await call.details(), address, what)


class GrpcInferenceStream:
    """An open Inference call to one server (implements `client.transport.InferenceStream`)."""

    def __init__(self, call: Any, address: str, limits: TensorLimits, opened: InferenceOpened,
                 writes: WriteWatches | None = None) -> None:
        self._call = call
        self._writes = writes or WriteWatches()
        """Times the steps' writes out (no timer per step: see swarm.write_watch)."""
        self.address = address
        self.server_id = opened.server_id
        self._limits = limits
        self.compression = Compression.NONE
        """How this session's steps send hidden states (the open's compression)."""
        self._unread: collections.deque[InferenceResult] = collections.deque()
        """The rest of a batch of results (`InferenceResults`), handed out one at a time."""

    @classmethod
    async def open(
        cls, pool: ChannelPool, address: str, request: InferenceOpen, timeout: float,
        limits: TensorLimits, writes: WriteWatches | None = None,
    ) -> GrpcInferenceStream:
        call = pool.stub(address).Inference()
        what = f"opening session for blocks {request.blocks}"
        with rpc_errors(address, what):
            try:
                try:
                    await _timed(call.write(messages.encode_inference_request(request)), timeout)
                    message = await _timed(call.read(), timeout)
                except (grpc.aio.UsageError, asyncio.InvalidStateError) as error:
                    # the server ended the call before our open was written (e.g. it refused the
                    # swarm token): its status says why, not "RPC already finished"
                    raise await call_failure(call, error, address, what) from None
                if message is grpc.aio.EOF:  # ended without a word: its status says why
                    raise await _status_error(call, address, what, timeout)
                reply = messages.decode_inference_response(message, limits)
            except BaseException:
                call.cancel()
                raise
        if not isinstance(reply, InferenceOpened):
            call.cancel()
            raise PeerUnavailable(f"{address} did not open the session", peer=address)
        stream = cls(call, address, limits, reply, writes)
        stream.compression = request.compression
        return stream

    async def send(self, step: InferenceStep, timeout: float) -> None:
        """Sends a step without waiting for its result."""
        what = f"step {step.step_id}"
        with rpc_errors(self.address, what):
            try:
                await self._writes.watch(timeout).write(
                    self._call, messages.encode_inference_request(step, self.compression))
            except asyncio.InvalidStateError:
                raise await self._ended(what, timeout) from None

    async def _reply(self, what: str, timeout: float | None) -> InferenceResponse:
        """The next answer on the stream; a batch of results comes out one result at a time."""
        if self._unread:
            return self._unread.popleft()
        with rpc_errors(self.address, what):
            read = self._call.read()
            message = await (read if timeout is None else _timed(read, max(timeout, 0.0)))
            if message is grpc.aio.EOF:
                raise await self._ended(what, 10.0 if timeout is None else timeout)
            reply = messages.decode_inference_response(message, self._limits)
        if isinstance(reply, InferenceResults):
            self._unread.extend(reply.results[1:])
            return reply.results[0]
        return reply

    async def receive(self, step_id: int, timeout: float) -> InferenceResult:
        """The result of step `step_id` (sent by us or pushed by the previous server)."""
        what = f"step {step_id}"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            reply = await self._reply(what, deadline - asyncio.get_running_loop().time())
            # a step pushed twice (its first pusher died after pushing and was replaced)
            # is answered twice: skip the stale copy
            if not (isinstance(reply, InferenceResult) and reply.step_id < step_id):
                break
        if not isinstance(reply, InferenceResult) or reply.step_id != step_id:
            raise PeerUnavailable(f"{self.address} answered step {step_id} out of order", peer=self.address)
        return reply

    async def next_result(self) -> InferenceResult:
        """The next result on the stream, whatever its step (no timeout: readers wait)."""
        reply = await self._reply("next result", None)
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
        return await _status_error(self._call, self.address, what, timeout)

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
        except (*CALL_FAILURES, SwarmError) as error:
            logger.debug("closing session on %s: %s", self.address, error)
        finally:
            self._call.cancel()

    def abort(self) -> None:
        self._call.cancel()


class GrpcTransport:
    """`client.transport.Transport` over gRPC: one pooled channel per server address."""

    def __init__(self, limits: TensorLimits, pool: ChannelPool | None = None, compression: str = "none") -> None:
        self.limits = limits
        """Bounds on every tensor decoded from a server."""
        self.pool = pool or ChannelPool()
        self.compression = compression
        """Wire compression policy of hidden states (`swarm.codec.compression.policy`)."""
        policy(compression, torch.float32)  # an unknown name fails here, not at the first call
        self._writes = WriteWatches()
        """Times out the steps' writes of every stream this transport opens."""

    async def open_inference(self, address: str, request: InferenceOpen, timeout: float) -> GrpcInferenceStream:
        if request.compression is Compression.NONE:
            request = replace(request, compression=policy(self.compression, request.dtype))
        return await GrpcInferenceStream.open(self.pool, address, request, timeout, self.limits, self._writes)

    async def forward(self, address: str, call: ForwardCall, timeout: float) -> torch.Tensor:
        # a training pass's Forward (it has a pass id) stays exact like its Backward: its
        # gradients must equal local autograd's
        if call.compression is Compression.NONE and call.tensors and not call.pass_id:
            call = replace(call, compression=policy(self.compression, call.tensors[0].dtype))
        (out,) = await self._batch_call(address, call, timeout, backward=False, answers=1)
        return out

    async def backward(self, address: str, call: ForwardCall, timeout: float
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        tuning = call.tuning.tensors() if call.tuning else []
        grad, *tuning_grads = await self._batch_call(address, call, timeout, backward=True, answers=1 + len(tuning))
        for got, sent in zip(tuning_grads, tuning):
            if got.shape != sent.shape:
                raise BadOutput(f"{address} answered a tuning gradient of shape {list(got.shape)} for a tensor "
                                f"of shape {list(sent.shape)}", code="DATA_LOSS", peer=address)
        return grad, tuple(tuning_grads)

    async def _batch_call(self, address: str, call: ForwardCall, timeout: float, backward: bool,
                          answers: int) -> tuple[torch.Tensor, ...]:
        """A stateless Forward or Backward call (a stream of tensors each way)."""
        stub = self.pool.stub(address)
        method = stub.Backward if backward else stub.Forward
        what = f"{'backward' if backward else 'forward'} through blocks {call.blocks}"

        with rpc_errors(address, what):
            responses = method(timeout=timeout)
            try:
                for message in messages.encode_forward_call(call, backward=backward):
                    await responses.write(message)
                await responses.done_writing()
            except (grpc.aio.UsageError, asyncio.InvalidStateError):
                pass  # the server answered before reading it all (it refused the header): its status says why
            out = await messages.decode_tensor_stream(responses, self.limits)
        if len(out) != answers:
            raise BadOutput(f"{address} answered {len(out)} tensors to a {what}, not {answers}", code="DATA_LOSS",
                            peer=address)
        return out

    async def info(self, address: str, timeout: float) -> ServerInfo:
        with rpc_errors(address, "info"):
            reply = await self.pool.stub(address).Info(messages.info_request(), timeout=timeout)
        return messages.decode_info(reply)

    async def ping(self, address: str, timeout: float) -> float:
        return await ping(self.pool, address, timeout)

    async def close(self) -> None:
        await self._writes.close()
        await self.pool.close()
