"""Failover of a live session: replace failed servers and rebuild their caches by replay.

When a segment of the route has failed, `Failover.recover` waits until that segment's
input for the current step has arrived (chain order), bans the server, opens a fresh
route over exactly the lost blocks (possibly several servers, between the same
neighbours), replays to it everything that crossed those blocks so far (from
`client.session_state.SessionHistory`) and re-sends the current step. Errors that no
other server could fix (`client.ban_policy.fails_over`) are raised at once; failovers per
step are bounded by `max_retries`.

Not here: detecting failures (`client.inference_session` reads the streams) or choosing
routes (`client.swarm_client`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

import torch

from client.ban_policy import fails_over
from swarm.prefill import prefill_spans
from client.route_opener import RouteOpener, SegmentFailed
from client.segments import SegmentEvent, SegmentStream
from client.session_state import History, SessionHistory, StepState
from client.verification import check_finite
from swarm.errors import SwarmError
from swarm.protocol import InferenceStep

logger = logging.getLogger(__name__)

SendStep = Callable[[SegmentStream, StepState], Awaitable[None]]
"""Sends the current step's input to a segment (the session's own send)."""


class Failover:
    """Replaces failed segments of one session's route."""

    def __init__(self, opener: RouteOpener, history: SessionHistory, step_ids: Iterator[int]) -> None:
        self.opener = opener
        self.history = history
        self.step_ids = step_ids
        """The session's step-id counter: replays take ids of their own."""
        self.recoveries: list[float] = []
        """Seconds each failover took (ban, re-route, replay), for logs and tests."""

    async def recover(self, segments: list[SegmentStream], state: StepState,
                      events: asyncio.Queue[SegmentEvent], send: SendStep) -> None:
        """Replaces failed segments whose input for this step has arrived, in chain order."""
        max_retries = self.opener.swarm.config.max_retries
        for segment in [s for s in segments if s in state.failed]:
            index = segments.index(segment)
            if index > 0 and segments[index - 1] not in state.done:
                return  # its input is still on the way: wait for the previous server
            error = state.failed.pop(segment)
            if not fails_over(error):
                raise error  # the request itself is wrong: another server would say the same
            state.recoveries += 1
            if state.recoveries > max_retries:
                raise error
            fresh = await self.replace(segments, index, error, state.meta.start)
            for opened in fresh:
                opened.start_reader(events)
            await send(fresh[0], state)

    async def replace(self, segments: list[SegmentStream], index: int, error: SwarmError,
                      start: int) -> list[SegmentStream]:
        """Puts a fresh route over segment `index`'s blocks in its place, caches rebuilt
        up to position `start`; returns the new segments (not read yet)."""
        began = time.perf_counter()
        failed = segments[index]
        session_id = self.opener.spec.session_id
        logger.warning("session %s: server %s failed on blocks %s (%s); recovering", session_id,
                       failed.server_id[:8], failed.blocks, error)
        await failed.stop()
        self.opener.swarm.ban(failed.server_id, failed.stream.address, error)
        after = segments[index - 1].server_id if index > 0 else None
        before = segments[index + 1].server_id if index + 1 < len(segments) else None

        async def replay(fresh: list[SegmentStream]) -> None:
            await self._replay(fresh, start, before is not None)

        fresh = await self.opener.open_retrying(failed.blocks, after, before, replay)
        segments[index : index + 1] = fresh
        self.recoveries.append(time.perf_counter() - began)
        logger.warning("session %s: recovered blocks %s in %.3f s via %s", session_id, failed.blocks,
                       self.recoveries[-1], " -> ".join(f"{s.server_id[:8]}[{s.blocks}]" for s in fresh))
        return fresh

    async def _replay(self, fresh: list[SegmentStream], start: int, has_next: bool) -> None:
        """Feeds the first `start` positions that crossed the lost blocks to the new servers
        (`has_next`: a segment follows them, whose inputs the history keeps)."""
        if start == 0:
            return
        history = self.history.upto(fresh[0].blocks.start, start)
        timeout = self.opener.swarm.config.step_timeout
        for segment in fresh:
            if segment is not fresh[0]:  # (the first boundary also holds this step's input)
                self.history.log(segment.blocks.start, history.hidden).write(
                    0, history.hidden, history.position_ids, history.attention_mask)
            try:
                out = await self._replay_to(segment, history, timeout)
            except SwarmError as error:
                if not fails_over(error):
                    raise
                raise SegmentFailed(segment.server_id, error, segment.stream.address) from error
            history = History(out, history.position_ids, history.attention_mask)
        if has_next:
            # the lost server's copies of its last steps may never have come (held for
            # defer_copy when it died): what the replacement computed from the same inputs
            # stands in for them, so that a later failover of the next server replays all of it
            self.history.log(fresh[-1].blocks.end, history.hidden).write(
                0, history.hidden, history.position_ids, history.attention_mask)

    async def _replay_to(self, segment: SegmentStream, history: History, timeout: float) -> torch.Tensor:
        """The segment's output for `history`, sent in chunks as a long prompt is (`client.prefill`)."""
        hidden = history.hidden
        outs = []
        for a, b in prefill_spans(0, hidden.shape[1], hidden.shape[0], hidden.shape[2], hidden.dtype):
            step = InferenceStep(next(self.step_ids), hidden[:, a:b], a, history.position_ids[:, a:b],
                                 history.attention_mask[:, :b])
            outs.append(await segment.stream.step(step, timeout))
            check_finite(outs[-1], segment.stream.address, f"the replay of blocks {segment.blocks}")
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
