"""Opening a session's streams along a route: ask for a route, open one stream per part.

`RouteOpener.open` opens every part of one route at once; if any server fails to open,
the others are aborted and `SegmentFailed` names the culprit (the caller bans it and
asks again), unless no other server could do better (`client.ban_policy.fails_over`):
that error is raised as it is. `RouteSource` is what sessions need of `client.swarm_client.SwarmClient`
(routes, bans, config), so that tests can stand in for the swarm.

Not here: reading results or replaying caches (`client.inference_session`, `client.failover`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from client.ban_policy import fails_over
from client.config import ClientConfig
from client.routing import Route
from client.segments import SegmentStream
from client.transport import Transport
from swarm.errors import PeerUnavailable, SwarmError
from swarm.protocol import InferenceOpen
from swarm.records import BlockRange
from swarm.tuning import Tuning

logger = logging.getLogger(__name__)


Prepare = Callable[[list[SegmentStream]], Awaitable[None]]
"""Work on freshly opened streams before they count as open (e.g. a cache replay)."""


class RouteSource(Protocol):
    """Routes through the swarm and the client's memory of failed servers."""

    config: ClientConfig

    async def route(
        self, model: str, num_blocks: int, span: BlockRange, session_tokens: int,
        after: str | None = None, before: str | None = None, forward: bool = False,
    ) -> tuple[Route, dict[str, str]]:
        """The best route over `span` and its servers' addresses (raises NoRoute)."""
        ...

    def ban(self, server_id: str, address: str = "", error: SwarmError | None = None) -> None:
        """Avoids a failed server (its id and its address) for a while."""
        ...

    def replicas(self, model: str, blocks: BlockRange, exclude: frozenset[str]) -> list[tuple[str, str]]:
        """(id, address) of unbanned servers holding all of `blocks`, other than `exclude`."""
        ...

    def succeeded(self, server_id: str) -> None:
        """Forgets a server's past failures (it answered)."""
        ...


class SegmentFailed(PeerUnavailable):
    """A server failed while a route was being opened or its cache rebuilt."""

    def __init__(self, server_id: str, error: BaseException, address: str = "") -> None:
        super().__init__(f"server {server_id[:8]} failed: {error}", code=getattr(error, "code", "UNKNOWN"),
                         peer=address or getattr(error, "peer", ""))
        self.server_id = server_id
        self.error = error


@dataclass(frozen=True)
class SessionSpec:
    """What every stream of one session is opened with."""

    model: str
    num_blocks: int
    """Blocks of the whole model (routing looks them all up)."""
    batch_size: int
    max_length: int
    dtype: torch.dtype
    session_id: str
    """The session's own id; each stream's id extends it with a random part."""
    tuning: Tuning | None = None
    """Deep prompts and LoRA factors; each stream is opened with its blocks' part."""


class RouteOpener:
    """Opens the streams of one session over routes the swarm picks."""

    def __init__(self, swarm: RouteSource, transport: Transport, spec: SessionSpec) -> None:
        self.swarm = swarm
        self.transport = transport
        self.spec = spec

    async def open(self, span: BlockRange, after: str | None, before: str | None) -> list[SegmentStream]:
        """Streams over `span` on a fresh route between servers `after` and `before`."""
        spec = self.spec
        route, addresses = await self.swarm.route(
            spec.model, spec.num_blocks, span, spec.batch_size * spec.max_length, after, before
        )
        opened = await asyncio.gather(
            *(self._open_one(addresses[s.server_id], s.server_id, s.blocks) for s in route.segments),
            return_exceptions=True,
        )
        failures = [(s, r) for s, r in zip(route.segments, opened) if isinstance(r, BaseException)]
        if failures:
            for result in opened:
                if isinstance(result, SegmentStream):
                    result.stream.abort()
            segment, error = failures[0]
            for _, reason in failures:
                if isinstance(reason, SwarmError) and not fails_over(reason):
                    raise reason  # e.g. a batch size every server would reject: do not ban, do not retry
            raise SegmentFailed(segment.server_id, error, addresses[segment.server_id])
        return [r for r in opened if isinstance(r, SegmentStream)]

    async def open_retrying(self, span: BlockRange, after: str | None, before: str | None,
                            prepare: Prepare | None = None) -> list[SegmentStream]:
        """Streams over `span`, routing around servers that fail to open (or in `prepare`).

        Each failed server is banned, so the next route avoids it; NoRoute propagates (it
        names the block no live server holds). Gives up after `max_retries` routes.
        """
        attempts = self.swarm.config.max_retries
        for _ in range(attempts):
            fresh: list[SegmentStream] = []
            try:
                fresh = await self.open(span, after, before)
                if prepare is not None:
                    await prepare(fresh)
            except SegmentFailed as failed:
                logger.warning("session %s: %s", self.spec.session_id, failed)
                for segment in fresh:
                    segment.stream.abort()
                cause = failed.error if isinstance(failed.error, SwarmError) else failed
                self.swarm.ban(failed.server_id, failed.peer, cause)
                continue
            return fresh
        raise PeerUnavailable(f"could not open streams over blocks {span} of {self.spec.model} "
                              f"after {attempts} attempts")

    async def _open_one(self, address: str, server_id: str, blocks: BlockRange) -> SegmentStream:
        spec = self.spec
        # 128 random bits each; the capability goes only to the server that pushes here (SegmentStream.hop)
        session_id, capability = secrets.token_hex(16), secrets.token_hex(16)
        tuning = spec.tuning.restricted(blocks) if spec.tuning else None
        request = InferenceOpen(spec.model, blocks, spec.batch_size, spec.max_length, spec.dtype, session_id,
                                capability, tuning or None)
        stream = await self.transport.open_inference(address, request, self.swarm.config.open_timeout)
        return SegmentStream(server_id, blocks, stream, session_id, capability)
