"""gRPC glue of the block service: decodes requests, calls the handlers, encodes answers.

No logic lives here beyond moving messages through `swarm.codec.messages` and checking
them; errors are mapped to statuses by `node.error_mapping.grpc_errors`. Forward and
Backward calls are judged by their header before their payload is read: shapes against
the model, declared bytes against the codec's limits and against the bytes this server
and this client address (`node.limits.peer_of`) already have in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
import time
from collections.abc import AsyncIterator, Callable

import grpc

from node.backend import BlockBackend
from node.inference import InferenceSessions
from node.metrics import ServerMetrics
from node.state import ServingState
from node.graph_cache import GraphCache, KeptPass, tuning_key
from node.tuning_cache import TuningCache
from node.error_mapping import grpc_errors
from node.limits import Overloaded, ShareLedger, peer_of
from node.validation import (
    FLOAT_DTYPES,
    RANDOM_ID_CHARS,
    check_blocks,
    check_finite,
    check_finite_output,
    check_hidden,
    check_positions_and_mask,
    is_random_id,
)
from swarm.codec import messages
from swarm.codec.limits import TensorLimits
from swarm.errors import InvalidInput, SessionStateError, SwarmError
from swarm.tuning import content_digest
from swarm.protocol import ForwardCall, ForwardHeader, InferenceRequest, ServerInfo
from swarm.v1 import block_service_pb2_grpc

logger = logging.getLogger(__name__)

COURTESY_DRAIN_BYTES = 16 << 20
"""A refused Forward/Backward of at most this many bytes is read (and dropped) before the
answer, so that its client sees the status (a gRPC client still writing when the call
ends sees INTERNAL instead). Larger refused calls end at once: their bytes are not read."""


class BlockServicer(block_service_pb2_grpc.BlockServiceServicer):
    """Implements swarm.v1.BlockService over a backend and its sessions."""

    def __init__(
        self,
        backend: BlockBackend,
        sessions: InferenceSessions,
        state: ServingState,
        limits: TensorLimits,
        info: Callable[[], ServerInfo],
        metrics: ServerMetrics,
    ) -> None:
        self.metrics = metrics
        self.backend = backend
        self.sessions = sessions
        self.state = state
        self.limits = limits
        self.info = info
        config = sessions.config
        self.inflight = ShareLedger(config.max_inflight_bytes, config.max_peer_inflight_bytes)
        """Request bytes being received or worked on, server-wide and per client address."""
        self.tuning_cache = TuningCache(config.max_tuning_bytes // 4)
        """Tuning tensors of recent passes by digest (a Backward refers to its Forward's)."""
        self.graphs = GraphCache(config.max_graph_bytes)
        """Autograd graphs of training passes by (client address, pass id), for their Backward."""

    async def _decoded(self, request_iterator: AsyncIterator[object]) -> AsyncIterator[InferenceRequest]:
        async for message in request_iterator:
            yield messages.decode_inference_request(message, self.limits)  # type: ignore[arg-type]

    @grpc_errors
    async def Inference(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for response in self.sessions.serve(self._decoded(request_iterator), peer_of(context.peer())):
            yield messages.encode_inference_response(response)

    def _take_in_flight(self, peer: str, nbytes: int) -> None:
        """Counts a call's declared bytes as in flight (until `inflight.release` once answered)."""
        if not self.inflight.try_take(peer, nbytes):
            raise Overloaded(f"request of {nbytes} bytes refused: {self.inflight.refusal(peer, nbytes)} "
                             "(bytes in flight); retry later")

    def _check_call(self, call: ForwardHeader | ForwardCall, expected: int) -> None:
        check_blocks(call.model, call.blocks, self.state.model_name, self.state.blocks)
        self.state.check_accepting()
        if len(call.tensors) not in (expected, expected + 1):
            raise InvalidInput(f"expected {expected} tensors (+ optional attention_mask), got {len(call.tensors)}")
        hidden = call.tensors[0]
        if hidden.dtype not in FLOAT_DTYPES:
            raise InvalidInput(f"hidden states must be a float type, got {hidden.dtype}")
        check_hidden(hidden, self.backend.hidden_size, hidden.dtype, None)
        if hidden.shape[1] > self.sessions.config.max_session_length:
            raise InvalidInput(f"{hidden.shape[1]} tokens per row exceed this server's limit of "
                               f"{self.sessions.config.max_session_length}")
        if hidden.shape[0] > self.sessions.config.max_batch_size:
            raise InvalidInput(
                f"batch of {hidden.shape[0]} rows exceeds this server's limit of "
                f"{self.sessions.config.max_batch_size}"
            )
        for extra in call.tensors[1:expected]:
            if extra.shape != hidden.shape or extra.dtype != hidden.dtype:
                raise InvalidInput(f"grad_outputs must match hidden states {list(hidden.shape)} "
                                   f"{hidden.dtype}, got {list(extra.shape)} {extra.dtype}")
        mask = call.tensors[expected] if len(call.tensors) > expected else None
        check_positions_and_mask(None, mask, hidden.shape[0], hidden.shape[1], hidden.shape[1])
        if call.tuning is not None:
            self.backend.check_tuning(call.tuning, call.blocks, hidden.shape[0])
        if call.pass_id and not is_random_id(call.pass_id):
            raise InvalidInput(f"pass_id must be empty or {RANDOM_ID_CHARS} lowercase hex digits "
                               f"(128 random bits), got {len(call.pass_id)} characters")

    def _with_tuning_tensors(self, call: ForwardCall) -> ForwardCall:
        """A call whose tuning refers to a digest gets the tensors kept under it; tensors that
        came with a digest are checked against it and kept (`node.tuning_cache`)."""
        tuning = call.tuning
        if tuning is None or tuning.adapter or not tuning.digest:
            return call
        if call.tuning_by_reference:
            kept = self.tuning_cache.get(tuning.digest)
            if kept is None:
                raise SessionStateError("tuning digest unknown on this server (never sent here, or dropped): "
                                        "send the tensors")
            if [(s, t.shape, t.dtype) for s, t in kept.slots()] != [(s, t.shape, t.dtype) for s, t in tuning.slots()]:
                raise InvalidInput("the tuning kept under this digest has other slots or shapes than the call declares")
            return replace(call, tuning=kept, tuning_by_reference=False)
        if content_digest(tuning) != tuning.digest:
            raise InvalidInput("the tuning's digest does not match its tensors")
        self.tuning_cache.put(tuning)
        return call

    @contextlib.asynccontextmanager
    async def _batch_call(self, requests: AsyncIterator[object], context: object, expected: int
                          ) -> AsyncIterator[tuple[ForwardCall, str]]:
        """Header first (checked), then the payload, held as in flight while the caller works."""
        try:
            opening = await messages.read_forward_header(requests, self.limits)
        except SwarmError:  # a malformed header: the same courtesy, so its client reads why
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(messages.discard_stream(requests, COURTESY_DRAIN_BYTES), 5.0)
            raise
        peer = peer_of(context.peer())  # type: ignore[attr-defined]
        nbytes = max(opening.header.nbytes, 1)  # an empty call still counts as one
        try:
            self._check_call(opening.header, expected)
            self._take_in_flight(peer, nbytes)
        except SwarmError:
            if opening.header.nbytes <= COURTESY_DRAIN_BYTES:  # its client then reads the status, not INTERNAL
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(messages.discard_payload(opening, COURTESY_DRAIN_BYTES), 5.0)
            raise
        try:
            call = self._with_tuning_tensors(await messages.read_forward_payload(opening, self.limits))
            for tensor, name in zip(call.tensors[:expected], ("hidden states", "grad_outputs")):
                check_finite(tensor, name)
            if call.tuning is not None:
                for tensor in call.tuning.tensors():
                    check_finite(tensor, "tuning tensors")
            yield call, peer
        finally:
            self.inflight.release(peer, nbytes)

    @grpc_errors
    async def Forward(self, request_iterator, context):  # type: ignore[no-untyped-def]
        began = time.perf_counter()  # latency: from the request to the answer's tensors
        async with self._batch_call(request_iterator, context, 1) as (call, peer):
            self.metrics.batch_calls.labels("forward").inc()
            mask = call.tensors[1] if len(call.tensors) > 1 else None
            if call.pass_id and tuning_key(call.tuning) is not None:  # a training pass: keep its graph
                out, kept = await self.backend.forward_keeping(call.blocks, call.tensors[0], mask, peer, call.tuning)
                check_finite_output(out)
                if self.graphs.put(peer, call.pass_id, kept, time.monotonic()):
                    self.metrics.training_graphs.labels("kept").inc()
                self.metrics.training_graph_bytes.set(self.graphs.used)
            else:
                out = await self.backend.forward(call.blocks, call.tensors[0], mask, peer, call.tuning)
                check_finite_output(out)
        self.metrics.batch_seconds.labels("forward").observe(time.perf_counter() - began)
        for message in messages.encode_tensor_stream([out], compression=call.compression):
            yield message

    @grpc_errors
    async def Backward(self, request_iterator, context):  # type: ignore[no-untyped-def]
        began = time.perf_counter()  # latency: from the request to the answer's tensors
        async with self._batch_call(request_iterator, context, 2) as (call, peer):
            self.metrics.batch_calls.labels("backward").inc()
            mask = call.tensors[2] if len(call.tensors) > 2 else None
            kept = self._kept_graph(call, peer)
            grad, tuning_grads = await self.backend.backward(call.blocks, call.tensors[0], call.tensors[1], mask,
                                                             peer, call.tuning, kept)
            for tensor in (grad, *tuning_grads):
                check_finite_output(tensor)
        self.metrics.batch_seconds.labels("backward").observe(time.perf_counter() - began)
        for message in messages.encode_tensor_stream([grad, *tuning_grads], backward=True,
                                                     compression=call.compression, compressed=1):
            yield message

    def _kept_graph(self, call: ForwardCall, peer: str) -> KeptPass | None:
        """The graph the call's Forward kept, if it still matches the call's inputs."""
        kept = self.graphs.take(peer, call.pass_id, time.monotonic()) if call.pass_id else None
        self.metrics.training_graph_bytes.set(self.graphs.used)
        mask = call.tensors[2] if len(call.tensors) > 2 else None
        if kept is None or not kept.matches(self.backend.stack, call.blocks, call.tensors[0], mask, call.tuning):
            self.metrics.training_graphs.labels("recomputed").inc()
            return None
        self.metrics.training_graphs.labels("reused").inc()
        return kept

    @grpc_errors
    async def Info(self, request, context):  # type: ignore[no-untyped-def]
        return messages.encode_info(self.info())

    @grpc_errors
    async def Probe(self, request, context):  # type: ignore[no-untyped-def]
        return messages.probe_response(request)

    @grpc_errors
    async def Push(self, request, context):  # type: ignore[no-untyped-def]
        self.sessions.push(messages.decode_push(request, self.limits))
        return messages.push_response()

    @grpc_errors
    async def PushStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for request in request_iterator:
            self.sessions.push(messages.decode_push(request, self.limits))
        return messages.push_response()


def add_to_server(servicer: BlockServicer, server: grpc.aio.Server) -> None:
    block_service_pb2_grpc.add_BlockServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
