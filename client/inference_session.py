"""An inference session through a chain of servers, surviving server failures.

The session opens one KV-cache stream per route segment. A step goes to the first
server; with chaining each server pushes its output to the next one and the step is done
when the last server answers (without chaining the client relays every hop). Every
server also returns its output to the client, read in the background (`client.segments`)
and kept, per segment boundary, as everything that crossed it so far.

When a server fails (broken stream, error status, silence past the step timeout) the
client bans it, routes exactly the lost blocks through other servers (possibly several),
replays the stored inputs to rebuild their caches and carries on: the caller sees only a
log line. Retries are bounded; with no live server for a block the error (`NoRoute`)
names the block and the model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field

import torch

from client.segments import Segment, SegmentEvent
from client.swarm_client import SwarmClient
from client.transport import InferenceStream
from swarm.errors import InvalidInput, PeerUnavailable, RemoteError, SessionStateError, SwarmError
from swarm.protocol import InferenceOpen, InferenceResult, InferenceStep
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

KEPT_STEPS = 64
"""Steps whose positions are remembered for late (background) results."""


@dataclass
class _History:
    """Everything that crossed one block boundary: [batch, position, ...] views."""

    hidden: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor


class _BoundaryLog:
    """What crossed one block boundary so far, in buffers of the session's max_length.

    Writing a step costs its own size, not the history's (no concatenation per token).
    """

    def __init__(self, batch: int, max_length: int, hidden: int, dtype: torch.dtype) -> None:
        self.hidden = torch.empty(batch, max_length, hidden, dtype=dtype)
        self.position_ids = torch.zeros(batch, max_length, dtype=torch.int64)
        self.attention_mask = torch.zeros(batch, max_length, dtype=torch.int64)

    def write(self, start: int, hidden: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> None:
        """Stores positions start.. of a step (its mask covers 0..end: only the new part is new)."""
        end = start + hidden.shape[1]
        self.hidden[:, start:end] = hidden
        self.position_ids[:, start:end] = positions
        self.attention_mask[:, start:end] = mask[:, start:end]

    def upto(self, length: int) -> _History:
        return _History(self.hidden[:, :length], self.position_ids[:, :length],
                        self.attention_mask[:, :length])


@dataclass(frozen=True)
class _StepMeta:
    start: int
    tokens: int
    position_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class _StepState:
    """Progress of the current step."""

    step_id: int
    meta: _StepMeta
    done: set[Segment] = field(default_factory=set)
    failed: dict[Segment, SwarmError] = field(default_factory=dict)
    result: torch.Tensor | None = None
    recoveries: int = 0


class RemoteInferenceSession:
    """Async core of an inference session over blocks `span` of `model`."""

    def __init__(
        self,
        client: SwarmClient,
        model: str,
        num_blocks: int,
        span: BlockRange,
        batch_size: int,
        max_length: int,
        dtype: torch.dtype,
    ) -> None:
        self.client = client
        self.model = model
        self.num_blocks = num_blocks
        self.span = span
        self.batch_size = batch_size
        self.max_length = max_length
        self.dtype = dtype
        self.session_id = uuid.uuid4().hex[:12]
        self.position = 0
        self.segments: list[Segment] = []
        self._history: dict[int, _BoundaryLog] = {}
        self._meta: dict[int, _StepMeta] = {}
        self._events: asyncio.Queue[SegmentEvent] | None = None
        self._leftover_failures: dict[Segment, SwarmError] = {}
        self._step_ids = itertools.count()
        self.recoveries: list[float] = []
        """Seconds each failover took (ban, re-route, replay), for logs and tests."""

    @property
    def route_description(self) -> str:
        return " -> ".join(f"{s.server_id[:8]}@{s.stream.address}[{s.blocks}]" for s in self.segments)

    @property
    def _chained(self) -> bool:
        return self.client.config.routing.chained

    # ---- opening -------------------------------------------------------------------

    async def open(self) -> None:
        """Opens streams on a route; servers that fail to open are banned and routed around."""
        self._events = asyncio.Queue()
        for _ in range(self.client.config.max_retries):
            try:
                self.segments = await self._open_route(self.span, None, None)
            except _SegmentFailed as failed:
                logger.warning("session %s: %s", self.session_id, failed)
                self.client.ban(failed.server_id)
                continue
            for segment in self.segments:
                segment.start_reader(self._events)
            return
        raise PeerUnavailable(f"could not open a session over {self.span} of {self.model} after "
                              f"{self.client.config.max_retries} attempts")

    async def _open_route(self, span: BlockRange, after: str | None, before: str | None) -> list[Segment]:
        route, addresses = await self.client.route(
            self.model, self.num_blocks, span, self.batch_size * self.max_length, after, before
        )
        config = self.client.config

        async def open_one(server_id: str, blocks: BlockRange) -> Segment:
            # random ids: knowing a session's id is what allows pushing steps into it
            session_id = f"{self.session_id}-{uuid.uuid4().hex[:16]}"
            request = InferenceOpen(self.model, blocks, self.batch_size, self.max_length, self.dtype,
                                    session_id)
            stream = await InferenceStream.open(self.client.pool, addresses[server_id], request,
                                                config.connect_timeout, config.tensor_limits)
            return Segment(server_id, blocks, stream, session_id)

        opened = await asyncio.gather(
            *(open_one(s.server_id, s.blocks) for s in route.segments), return_exceptions=True
        )
        failures = [(s, r) for s, r in zip(route.segments, opened) if isinstance(r, BaseException)]
        if failures:
            for result in opened:
                if isinstance(result, Segment):
                    result.stream.abort()
            segment, error = failures[0]
            raise _SegmentFailed(segment.server_id, error)
        return [r for r in opened if isinstance(r, Segment)]

    # ---- stepping ------------------------------------------------------------------

    async def step(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        start_position: int | None = None,
    ) -> torch.Tensor:
        """Runs new tokens' hidden states [batch, tokens, hidden] through the span."""
        start = self.position if start_position is None else start_position
        batch, tokens = hidden.shape[0], hidden.shape[1]
        self._check_step(hidden, start)
        if position_ids is None:
            position_ids = torch.arange(start, start + tokens).expand(batch, tokens)
        if attention_mask is None:
            attention_mask = torch.ones(batch, start + tokens, dtype=torch.int64)
        state = _StepState(next(self._step_ids), _StepMeta(start, tokens, position_ids, attention_mask))
        # a server that failed after its last answer is replaced during this step
        state.failed = {s: e for s, e in self._leftover_failures.items() if s in self.segments}
        self._meta[state.step_id] = state.meta
        self._meta.pop(state.step_id - KEPT_STEPS, None)
        self._record(self.span.start, hidden.to(self.dtype), state.meta)
        if self.segments[0] not in state.failed:
            await self._send(self.segments[0], state)
        while state.result is None:
            await self._recover_failed(state)
            if state.result is None:
                await self._handle(await self._next_event(state), state)
        self._leftover_failures = state.failed
        self.position = start + tokens
        return state.result

    async def _next_event(self, state: _StepState) -> SegmentEvent:
        assert self._events is not None
        config = self.client.config
        timeout = config.step_timeout + (config.push_allowance if self._chained else 0.0)
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            # the first server in chain order that has not answered is the one that hangs
            silent = next(s for s in self.segments if s not in state.done)
            return silent, PeerUnavailable(f"no answer to step {state.step_id} within {timeout:g} s",
                                           code="DEADLINE_EXCEEDED", peer=silent.stream.address)

    async def _handle(self, event: SegmentEvent, state: _StepState) -> None:
        segment, payload = event
        if segment not in self.segments:
            return  # from a segment already replaced
        if isinstance(payload, SwarmError):
            state.failed[segment] = payload
            return
        if payload.step_id < state.step_id:
            self._late_result(segment, payload)
            return
        if payload.step_id > state.step_id or segment in state.done:
            return  # a duplicate (a step pushed twice after a failover)
        state.done.add(segment)
        self.client.bans.succeeded(segment.server_id)
        if segment is self.segments[-1]:
            state.result = payload.hidden_states
            return
        self._record(segment.blocks.end, payload.hidden_states, state.meta)
        if not self._chained or payload.push_failed:
            if payload.push_failed:
                logger.info("session %s: push after %s failed; relaying step %d", self.session_id,
                            segment.server_id[:8], state.step_id)
            await self._send(self.segments[self.segments.index(segment) + 1], state)

    def _late_result(self, segment: Segment, result: InferenceResult) -> None:
        """A middle server's copy of an earlier step: keep it for replays."""
        meta = self._meta.get(result.step_id)
        if meta is not None and segment is not self.segments[-1]:
            self._record(segment.blocks.end, result.hidden_states, meta)

    async def _send(self, segment: Segment, state: _StepState) -> None:
        """Sends the step's input at the segment's first block (with the rest of the chain)."""
        meta, boundary = state.meta, self._history[segment.blocks.start]
        index = self.segments.index(segment)
        onward = tuple(s.hop for s in self.segments[index + 1 :]) if self._chained else ()
        step = InferenceStep(state.step_id, boundary.hidden[:, meta.start : meta.start + meta.tokens],
                             meta.start, meta.position_ids, meta.attention_mask, onward)
        try:
            await segment.stream.send(step, self.client.config.step_timeout)
        except SwarmError as error:
            state.failed[segment] = error

    def _record(self, boundary: int, x: torch.Tensor, meta: _StepMeta) -> None:
        self._log(boundary, x).write(meta.start, x, meta.position_ids, meta.attention_mask)

    def _log(self, boundary: int, like: torch.Tensor) -> _BoundaryLog:
        log = self._history.get(boundary)
        if log is None:
            log = self._history[boundary] = _BoundaryLog(self.batch_size, self.max_length, like.shape[-1], self.dtype)
        return log

    def _check_step(self, hidden: torch.Tensor, start: int) -> None:
        if not self.segments:
            raise SessionStateError("the session is not open")
        if hidden.dim() != 3 or hidden.shape[0] != self.batch_size:
            raise InvalidInput(f"hidden states must be [{self.batch_size}, tokens, hidden], got "
                               f"{list(hidden.shape)}")
        if not 0 <= start <= self.position:
            raise SessionStateError(f"step may start at 0..{self.position}, not {start}")
        if start + hidden.shape[1] > self.max_length:
            raise SessionStateError(f"session max_length {self.max_length} exceeded: "
                                    f"{start + hidden.shape[1]} tokens")

    # ---- failover ------------------------------------------------------------------

    async def _recover_failed(self, state: _StepState) -> None:
        """Replaces failed segments whose input for this step has arrived (chain order)."""
        for segment in [s for s in self.segments if s in state.failed]:
            index = self.segments.index(segment)
            if index > 0 and self.segments[index - 1] not in state.done:
                return  # its input is still on the way: wait for the previous server
            error = state.failed.pop(segment)
            if isinstance(error, RemoteError) and error.code == "INVALID_ARGUMENT":
                raise error  # the request itself is wrong: another server would say the same
            state.recoveries += 1
            if state.recoveries > self.client.config.max_retries:
                raise error
            fresh = await self._replace(index, error, state.meta.start)
            await self._send(fresh[0], state)

    async def _replace(self, index: int, error: SwarmError, start: int) -> list[Segment]:
        """Replaces segment `index` by a fresh route over its blocks, caches rebuilt."""
        began = time.perf_counter()
        failed = self.segments[index]
        logger.warning("session %s: server %s failed on blocks %s (%s); recovering", self.session_id,
                       failed.server_id[:8], failed.blocks, error)
        await failed.stop()
        self.client.ban(failed.server_id)
        after = self.segments[index - 1].server_id if index > 0 else None
        before = self.segments[index + 1].server_id if index + 1 < len(self.segments) else None
        for _ in range(self.client.config.max_retries):
            fresh: list[Segment] = []
            try:
                # NoRoute propagates: it names the block no live server holds
                fresh = await self._open_route(failed.blocks, after, before)
                await self._replay(fresh, start)
            except _SegmentFailed as replacement:
                for segment in fresh:
                    segment.stream.abort()
                self.client.ban(replacement.server_id)
                continue
            assert self._events is not None
            for segment in fresh:
                segment.start_reader(self._events)
            self.segments[index : index + 1] = fresh
            self.recoveries.append(time.perf_counter() - began)
            logger.warning("session %s: recovered blocks %s in %.3f s via %s", self.session_id,
                           failed.blocks, self.recoveries[-1],
                           " -> ".join(f"{s.server_id[:8]}[{s.blocks}]" for s in fresh))
            return fresh
        raise PeerUnavailable(f"could not replace the servers of blocks {failed.blocks} of "
                              f"{self.model} after {self.client.config.max_retries} attempts")

    async def _replay(self, fresh: list[Segment], start: int) -> None:
        """Feeds the first `start` positions that crossed the lost blocks to the new servers."""
        if start == 0:
            return
        history = self._history[fresh[0].blocks.start].upto(start)
        for segment in fresh:
            if segment is not fresh[0]:  # (the first boundary also holds this step's input)
                self._log(segment.blocks.start, history.hidden).write(
                    0, history.hidden, history.position_ids, history.attention_mask)
            step = InferenceStep(next(self._step_ids), history.hidden, 0, history.position_ids,
                                 history.attention_mask)
            try:
                out = await segment.stream.step(step, self.client.config.step_timeout)
            except SwarmError as error:
                raise _SegmentFailed(segment.server_id, error) from error
            history = _History(out, history.position_ids, history.attention_mask)

    async def close(self) -> None:
        segments, self.segments = self.segments, []
        await asyncio.gather(
            *(s.close(self.client.config.connect_timeout) for s in segments), return_exceptions=True,
        )


class _SegmentFailed(PeerUnavailable):
    """A server failed while a route was being opened or its cache rebuilt."""

    def __init__(self, server_id: str, error: BaseException) -> None:
        super().__init__(f"server {server_id[:8]} failed: {error}")
        self.server_id = server_id
        self.error = error
