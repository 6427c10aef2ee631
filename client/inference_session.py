"""An inference session through a chain of servers, surviving server failures.

The session opens one KV-cache stream per route segment (`client.route_opener`). A step
goes to the first server; with chaining each server pushes its output to the next one
and the step is done when the last server answers (without chaining, or when a push
failed, the client relays the hop itself). Every server also returns its output to the
client, read in the background (`client.segments`) and kept, per block boundary, as
everything that crossed it so far (`client.session_state`).

A failed server (broken stream, error status, silence past the step timeout) is
replaced by `client.failover`: the caller sees only a log line. Retries are bounded;
with no live server for a block the error (`NoRoute`) names the block and the model.

This module is the stepping state machine only: it talks to servers through a
`client.transport.Transport` and to the swarm through a `RouteSource`, both injected.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid

import torch

from client.failover import Failover
from swarm.prefill import prefill_spans
from client.route_opener import RouteOpener, RouteSource, SessionSpec
from client.segments import SegmentEvent, SegmentStream
from client.session_state import SessionHistory, StepMeta, StepState
from client.transport import Transport
from client.verification import BadOutput, VerificationStats, check_finite
from client.verifier import Verifier
from swarm.errors import InvalidInput, PeerTimedOut, SessionStateError, SwarmError
from swarm.finite import all_finite
from swarm.protocol import COPY_HOLD_S, MAX_DEFERRED_TOKENS, MAX_STEP_HOPS, InferenceResult, InferenceStep
from swarm.records import BlockRange
from swarm.tuning import Tuning

logger = logging.getLogger(__name__)

PUSH_WINDOW = MAX_STEP_HOPS + 1
"""Segments one step crosses by pushes alone: servers accept at most MAX_STEP_HOPS onward
hops, so a longer chain comes back to the client after each window and is relayed on."""


class RemoteInferenceSession:
    """Async core of an inference session over blocks `span` of `model`."""

    def __init__(self, client: RouteSource, model: str, num_blocks: int, span: BlockRange,
                 batch_size: int, max_length: int, dtype: torch.dtype, transport: Transport,
                 verification: VerificationStats | None = None, tuning: Tuning | None = None) -> None:
        self.client = client
        self.model = model
        self.num_blocks = num_blocks
        self.span = span
        self.batch_size = batch_size
        self.max_length = max_length
        self.dtype = dtype
        self.session_id = uuid.uuid4().hex[:12]
        self.position = 0
        self.segments: list[SegmentStream] = []
        self._history = SessionHistory(batch_size, max_length, dtype)
        self._events: asyncio.Queue[SegmentEvent] = asyncio.Queue()
        self._leftover_failures: dict[SegmentStream, SwarmError] = {}
        self._step_ids = itertools.count()
        spec = SessionSpec(model, num_blocks, batch_size, max_length, dtype, self.session_id,
                           tuning.restricted(span) if tuning else None)
        self._opener = RouteOpener(client, transport, spec)
        self._failover = Failover(self._opener, self._history, self._step_ids)
        self.verification = verification or VerificationStats()
        """Steps checked, disagreements, servers banned (shared with the model if it passed one)."""
        seed = client.config.verify_seed
        self._verifier = Verifier(client, transport, model, self._history, self.verification,
                                  random.Random(seed), spec.tuning)

    @property
    def recoveries(self) -> list[float]:
        """Seconds each failover took (ban, re-route, replay), for logs and tests."""
        return self._failover.recoveries

    @property
    def route_description(self) -> str:
        return " -> ".join(f"{s.server_id[:8]}@{s.stream.address}[{s.blocks}]" for s in self.segments)

    @property
    def _chained(self) -> bool:
        return self.client.config.routing.chained

    async def open(self) -> None:
        """Opens streams on a route; servers that fail to open are banned and routed around."""
        self._events = asyncio.Queue()  # bound to the loop the session runs on
        self.segments = await self._opener.open_retrying(self.span, None, None)
        for segment in self.segments:
            segment.start_reader(self._events)

    async def step(self, hidden: torch.Tensor, position_ids: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None,
                   start_position: int | None = None) -> torch.Tensor:
        """Runs new tokens' hidden states [batch, tokens, hidden] through the span.

        A long input (a prompt) goes as consecutive steps of bounded size (`client.prefill`).
        """
        start = self.position if start_position is None else start_position
        batch, tokens = hidden.shape[0], hidden.shape[1]
        self._check_step(hidden, start)
        if position_ids is None:
            position_ids = torch.arange(start, start + tokens).expand(batch, tokens)
        if attention_mask is None:
            attention_mask = torch.ones(batch, start + tokens, dtype=torch.int64)
        spans = prefill_spans(start, tokens, batch, hidden.shape[2], self.dtype)
        if len(spans) == 1 and position_ids.shape[1] == tokens and attention_mask.shape[1] == start + tokens:
            # (every decode step: the slices below would be views of the whole, ~25 us of cold torch calls)
            return await self._step_chunk(hidden, start, position_ids, attention_mask)
        outs = [await self._step_chunk(hidden[:, a:b], start + a, position_ids[:, a:b],
                                       attention_mask[:, : start + b]) for a, b in spans]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    async def _step_chunk(self, hidden: torch.Tensor, start: int, position_ids: torch.Tensor,
                          attention_mask: torch.Tensor) -> torch.Tensor:
        """One step on the servers: `hidden` appended at `start` (dropping what came after)."""
        tokens = hidden.shape[1]
        state = StepState(next(self._step_ids), StepMeta(start, tokens, position_ids, attention_mask))
        # decided before sending: a step to check is sent without defer_copy (its copies are needed now)
        state.verify = self._verifier.wanted(state.meta)
        # a server that failed after its last answer is replaced during this step
        state.failed = {s: e for s, e in self._leftover_failures.items() if s in self.segments}
        self._history.begin_step(state.step_id, state.meta)
        self._history.record(self.span.start, hidden.to(self.dtype), state.meta)
        if self.segments[0] not in state.failed:
            await self._send(self.segments[0], state)
        while state.result is None:
            await self._failover.recover(self.segments, state, self._events, self._send)
            if state.result is None:
                await self._handle(await self._next_event(state), state)
            if state.result is not None:
                await self._verify(state)
        self._leftover_failures = state.failed
        self.position = start + tokens
        return state.result

    async def _next_event(self, state: StepState) -> SegmentEvent:
        if not self._events.empty():  # (held copies come 8 at a time: no timer for those queued)
            return self._events.get_nowait()
        config = self.client.config
        timeout = config.step_timeout + (config.push_allowance if self._chained else 0.0)
        if state.deferred:  # the middle servers' copies, which say who answered, may be held that long
            timeout += COPY_HOLD_S
        try:
            async with asyncio.timeout(timeout):  # not wait_for: no task per event
                return await self._events.get()
        except TimeoutError:
            # the first server in chain order that has not answered is the one that hangs
            silent = next(s for s in self.segments if s not in state.done)
            return silent, PeerTimedOut(f"no answer to step {state.step_id} within {timeout:g} s",
                                        code="DEADLINE_EXCEEDED", peer=silent.stream.address)

    async def _handle(self, event: SegmentEvent, state: StepState) -> None:
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
        if not self._finite(segment, payload, state):
            return
        state.done.add(segment)
        self.client.succeeded(segment.server_id)
        after = self._next_segment(segment)
        if after is not None and after in state.suspects:  # its input was fine: its output was not
            state.failed[after] = state.suspects.pop(after)
        if segment is self.segments[-1]:
            state.result = payload.hidden_states
            return
        self._history.record(segment.blocks.end, payload.hidden_states, state.meta)
        if not self._chained or payload.push_failed or self._window_end(segment):
            if payload.push_failed:
                logger.info("session %s: push after %s failed; relaying step %d", self.session_id,
                            segment.server_id[:8], state.step_id)
            await self._send(self.segments[self.segments.index(segment) + 1], state)

    def _window_end(self, segment: SegmentStream) -> bool:
        """Whether the segment ends a push window (its output comes back to be relayed)."""
        index = self.segments.index(segment)
        return (index + 1) % PUSH_WINDOW == 0 and index + 1 < len(self.segments)

    def _next_segment(self, segment: SegmentStream) -> SegmentStream | None:
        index = self.segments.index(segment)
        return self.segments[index + 1] if index + 1 < len(self.segments) else None

    def _finite(self, segment: SegmentStream, result: InferenceResult, state: StepState) -> bool:
        """False (and the segment failed, or suspect until its input is known) if the result
        holds NaN/Inf: such activations never become tokens."""
        try:
            check_finite(result.hidden_states, segment.stream.address,
                         f"step {state.step_id} on blocks {segment.blocks}")
        except BadOutput as error:
            if segment in state.forgiven:  # computed over NaN a replaced server had pushed to it
                state.forgiven.discard(segment)
                return False
            logger.warning("session %s: %s", self.session_id, error)
            self.verification.non_finite += 1
            index = self.segments.index(segment)
            after = self._next_segment(segment)
            if after is not None and after not in state.done:  # its NaN input came from here
                if state.suspects.pop(after, None) is None:
                    state.forgiven.add(after)
            if index > 0 and self.segments[index - 1] not in state.done:
                state.suspects[segment] = error  # a NaN input pushed by the previous server?
            else:
                state.failed[segment] = error
            return False
        return True

    async def _verify(self, state: StepState) -> None:
        """Spot-checks the finished step; an outvoted server is failed over and the step redone
        from its segment on."""
        if state.result is None or not state.verify:
            return
        state.verify = False  # (a step redone after an outvoted server is not checked again)
        await self._await_copies(state)
        liar = await self._verifier.check(self.segments, state.done, state.meta, state.result, self.session_id)
        if liar is None:
            return
        state.result = None
        for segment in self.segments[self.segments.index(liar):]:
            state.done.discard(segment)
        state.failed[liar] = BadOutput(f"{liar.stream.address} was outvoted on blocks {liar.blocks}",
                                       code="DATA_LOSS", peer=liar.stream.address)

    async def _await_copies(self, state: StepState) -> None:
        """Waits (one step timeout at most) for the middle servers' copies of a step to be
        checked: in a chain they may come after the last server's answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.client.config.step_timeout
        while any(s not in state.done and s not in state.failed for s in self.segments):
            try:
                event = await asyncio.wait_for(self._events.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return
            await self._handle(event, state)

    def _late_result(self, segment: SegmentStream, result: InferenceResult) -> None:
        """A middle server's copy of an earlier step: keep it for replays."""
        meta = self._history.step_meta(result.step_id)
        if meta is not None and segment is not self.segments[-1] and all_finite(result.hidden_states):
            self._history.record(segment.blocks.end, result.hidden_states, meta)
            self.client.succeeded(segment.server_id)  # (held copies come late: it answered all the same)

    async def _send(self, segment: SegmentStream, state: StepState) -> None:
        """Sends the step's input at the segment's first block (with the rest of the chain)."""
        meta = state.meta
        index = self.segments.index(segment)
        window_end = (index // PUSH_WINDOW + 1) * PUSH_WINDOW
        onward = tuple(s.hop for s in self.segments[index + 1 : window_end]) if self._chained else ()
        # middle servers may hold their copies and send them batched: each copy is a message
        # the client reads and checks, and nothing needs it before a failover, a NaN or a
        # silent server (each of which waits for copies anyway; servers send them after 0.2 s)
        defer = bool(onward) and not state.verify and self.batch_size * meta.tokens <= MAX_DEFERRED_TOKENS
        state.deferred = state.deferred or defer
        step = InferenceStep(state.step_id, self._history.step_input(segment.blocks.start, meta),
                             meta.start, *meta.wire_masks, onward, defer_copy=defer)
        try:
            await segment.stream.send(step, self.client.config.step_timeout)
        except SwarmError as error:
            state.failed[segment] = error

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

    async def close(self) -> None:
        segments, self.segments = self.segments, []
        await asyncio.gather(
            *(s.close(self.client.config.connect_timeout) for s in segments), return_exceptions=True,
        )
