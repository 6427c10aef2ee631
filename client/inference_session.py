"""An inference session through a chain of servers, surviving server failures.

The session opens one KV-cache stream per route segment and pushes each step's hidden
states through them in order. It keeps, for every segment boundary, the inputs that
crossed it so far. When a server fails (broken stream, error status, silence past the
step timeout) the client bans it, routes exactly the lost blocks through other servers
(possibly several), replays the stored inputs to rebuild their caches and carries on:
the caller sees only a log line. Retries are bounded; with no live server for a block
the error names the block and the model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from dataclasses import dataclass

import torch

from client.swarm_client import SwarmClient
from client.transport import InferenceStream
from swarm.errors import InvalidInput, PeerUnavailable, RemoteError, SessionStateError, SwarmError
from swarm.protocol import InferenceOpen, InferenceStep, NextHop
from swarm.records import BlockRange

logger = logging.getLogger(__name__)


@dataclass
class _Segment:
    server_id: str
    blocks: BlockRange
    stream: InferenceStream
    session_id: str
    """Unique per segment: one server may hold two segments of a route."""

    @property
    def hop(self) -> NextHop:
        return NextHop(self.stream.address, self.session_id)


@dataclass
class _History:
    """Everything that crossed one block boundary: [batch, position, ...]."""

    hidden: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor

    def upto(self, length: int) -> _History:
        return _History(self.hidden[:, :length], self.position_ids[:, :length],
                        self.attention_mask[:, :length])


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
        self.segments: list[_Segment] = []
        self._history: dict[int, _History] = {}
        self._step_ids = itertools.count()
        self.recoveries: list[float] = []
        """Seconds each failover took (ban, re-route, replay), for logs and tests."""

    @property
    def route_description(self) -> str:
        return " -> ".join(f"{s.server_id[:8]}@{s.stream.address}[{s.blocks}]" for s in self.segments)

    async def open(self) -> None:
        """Opens streams on a route; servers that fail to open are banned and routed around."""
        for _ in range(self.client.config.max_retries):
            try:
                self.segments = await self._open_route(self.span, None, None)
            except _SegmentFailed as failed:
                logger.warning("session %s: %s", self.session_id, failed)
                self.client.ban(failed.server_id)
                continue
            return
        raise PeerUnavailable(f"could not open a session over {self.span} of {self.model} after "
                              f"{self.client.config.max_retries} attempts")

    async def _open_route(self, span: BlockRange, after: str | None, before: str | None) -> list[_Segment]:
        route, addresses = await self.client.route(
            self.model, self.num_blocks, span, self.batch_size * self.max_length, after, before
        )
        config = self.client.config

        async def open_one(server_id: str, blocks: BlockRange) -> _Segment:
            # random ids: knowing a session's id is what allows pushing steps into it
            session_id = f"{self.session_id}-{uuid.uuid4().hex[:16]}"
            request = InferenceOpen(self.model, blocks, self.batch_size, self.max_length, self.dtype,
                                    session_id)
            stream = await InferenceStream.open(self.client.pool, addresses[server_id], request,
                                                config.connect_timeout, config.tensor_limits)
            return _Segment(server_id, blocks, stream, session_id)

        opened = await asyncio.gather(
            *(open_one(s.server_id, s.blocks) for s in route.segments), return_exceptions=True
        )
        failures = [(s, r) for s, r in zip(route.segments, opened) if isinstance(r, BaseException)]
        if failures:
            for result in opened:
                if isinstance(result, _Segment):
                    result.stream.abort()
            segment, error = failures[0]
            raise _SegmentFailed(segment.server_id, error)
        return [r for r in opened if isinstance(r, _Segment)]

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
        x = hidden.to(self.dtype)
        chained = self.client.config.routing.chained
        step_id = next(self._step_ids)
        index, retries, send = 0, 0, True
        while index < len(self.segments):
            segment = self.segments[index]
            self._record(segment.blocks.start, x, start, position_ids, attention_mask)
            onward = tuple(s.hop for s in self.segments[index + 1 :]) if chained else ()
            try:
                if send:
                    await segment.stream.send(
                        InferenceStep(step_id, x, start, position_ids, attention_mask, onward),
                        self.client.config.step_timeout)
                result = await segment.stream.receive(step_id, self._result_timeout(bool(onward)))
            except SwarmError as error:
                retries = self._check_retry(error, retries)
                await self._recover(index, error, start)
                send = True
                continue
            self.client.bans.succeeded(segment.server_id)
            x, index = result.hidden_states, index + 1
            # with chaining the server has pushed x on; relay it ourselves only if that failed
            send = not onward or result.push_failed
            if onward and result.push_failed:
                logger.info("session %s: push after %s failed; relaying step %d", self.session_id,
                            segment.server_id[:8], step_id)
        self.position = start + tokens
        return x

    def _result_timeout(self, pushes: bool) -> float:
        config = self.client.config
        return config.step_timeout + (config.push_allowance if pushes else 0.0)

    def _check_step(self, hidden: torch.Tensor, start: int) -> None:
        if hidden.dim() != 3 or hidden.shape[0] != self.batch_size:
            raise InvalidInput(f"hidden states must be [{self.batch_size}, tokens, hidden], got "
                               f"{list(hidden.shape)}")
        if not 0 <= start <= self.position:
            raise SessionStateError(f"step may start at 0..{self.position}, not {start}")
        if start + hidden.shape[1] > self.max_length:
            raise SessionStateError(f"session max_length {self.max_length} exceeded: "
                                    f"{start + hidden.shape[1]} tokens")

    def _check_retry(self, error: SwarmError, retries: int) -> int:
        if isinstance(error, RemoteError) and error.code == "INVALID_ARGUMENT":
            raise error  # the request itself is wrong: another server would say the same
        if retries >= self.client.config.max_retries:
            raise error
        return retries + 1

    def _record(self, boundary: int, x: torch.Tensor, start: int, pos: torch.Tensor, mask: torch.Tensor) -> None:
        old = self._history.get(boundary)
        if old is None or start == 0:
            self._history[boundary] = _History(x, pos, mask)
            return
        past = old.upto(start)
        self._history[boundary] = _History(
            torch.cat([past.hidden, x], 1), torch.cat([past.position_ids, pos], 1), mask
        )

    async def _recover(self, index: int, error: SwarmError, start: int) -> None:
        """Replaces segment `index` by a fresh route over its blocks, caches rebuilt."""
        began = time.perf_counter()
        failed = self.segments[index]
        logger.warning("session %s: server %s failed on blocks %s (%s); recovering", self.session_id,
                       failed.server_id[:8], failed.blocks, error)
        failed.stream.abort()
        self.client.ban(failed.server_id)
        after = self.segments[index - 1].server_id if index > 0 else None
        before = self.segments[index + 1].server_id if index + 1 < len(self.segments) else None
        for _ in range(self.client.config.max_retries):
            fresh: list[_Segment] = []
            try:
                # NoRoute propagates: it names the block no live server holds
                fresh = await self._open_route(failed.blocks, after, before)
                await self._replay(fresh, start)
            except _SegmentFailed as replacement:
                for segment in fresh:
                    segment.stream.abort()
                self.client.ban(replacement.server_id)
                continue
            self.segments[index : index + 1] = fresh
            self.recoveries.append(time.perf_counter() - began)
            logger.warning("session %s: recovered blocks %s in %.3f s via %s", self.session_id,
                           failed.blocks, self.recoveries[-1],
                           " -> ".join(f"{s.server_id[:8]}[{s.blocks}]" for s in fresh))
            return
        raise PeerUnavailable(f"could not replace the servers of blocks {failed.blocks} of "
                              f"{self.model} after {self.client.config.max_retries} attempts")

    async def _replay(self, fresh: list[_Segment], start: int) -> None:
        """Feeds the first `start` positions that crossed the lost blocks to the new servers."""
        if start == 0:
            return
        history = self._history[fresh[0].blocks.start].upto(start)
        for segment in fresh:
            self._history[segment.blocks.start] = history
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
            *(s.stream.close(self.client.config.connect_timeout) for s in segments),
            return_exceptions=True,
        )


class _SegmentFailed(PeerUnavailable):
    def __init__(self, server_id: str, error: BaseException) -> None:
        super().__init__(f"server {server_id[:8]} failed to open a session: {error}")
        self.server_id = server_id
        self.error = error
