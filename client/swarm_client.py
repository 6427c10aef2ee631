"""The client's view of the swarm: who serves which blocks, whom to avoid, which route.

Owns the client's DHT node, its transport (gRPC channels) and its ban list. Runs on the client's
event loop (see `client.runtime`). Route choice itself is the pure `client.routing`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from client.ban_policy import BanList
from client.config import ClientConfig
from swarm.latency import RttTracker
from client.routing import (
    LatencyView,
    Route,
    RouteCandidate,
    RouteQuery,
    find_route,
    sample_forward_route,
)
from client.grpc_transport import GrpcTransport
from client.transport import Transport
from swarm.dht import DhtConfig, SwarmDHT
from swarm.errors import NoRoute, SwarmError
from swarm.records import BlockEntry, BlockRange, ServerRecord, ServerState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    entries: dict[str, BlockEntry]
    records: dict[str, ServerRecord]
    fetched_at: float


class SwarmClient:
    """Finds servers on the DHT and picks routes through them."""

    def __init__(self, config: ClientConfig, dht: SwarmDHT, clock: Callable[[], float] = time.monotonic,
                 transport: Transport | None = None) -> None:
        self.config = config
        self.dht = dht
        self.transport: Transport = transport or GrpcTransport(config.tensor_limits)
        """How sessions and batch calls reach servers (tests inject a fake)."""
        self.bans = BanList(config.ban_base_s, config.ban_max_s)
        self.rtt = RttTracker()
        self._clock = clock
        self._snapshots: dict[str, _Snapshot] = {}
        self._rng = random.Random()

    @classmethod
    async def connect(cls, config: ClientConfig) -> SwarmClient:
        if not config.initial_peers:
            raise ValueError("the client needs at least one initial peer (HOST:PORT of a DHT node)")
        # client mode: peers do not add us to their tables (we store nothing, may leave any time)
        dht = await SwarmDHT.start(config.dht_host, 0, list(config.initial_peers),
                                   config=DhtConfig(client_mode=True))
        return cls(config, dht)

    async def close(self) -> None:
        await self.transport.close()
        await self.dht.stop()

    async def entries(self, model: str, num_blocks: int, refresh: bool = False) -> dict[str, BlockEntry]:
        """ONLINE servers of `model` by id (newest entry of each), cached for map_ttl."""
        snapshot = self._snapshots.get(model)
        now = self._clock()
        if snapshot and not refresh and now - snapshot.fetched_at < self.config.map_ttl:
            return snapshot.entries
        lookups = [
            asyncio.wait_for(self.dht.get_block_entries(model, block), self.config.dht_timeout)
            for block in range(num_blocks)
        ]
        found: dict[str, BlockEntry] = {}
        for result in await asyncio.gather(*lookups, return_exceptions=True):
            if isinstance(result, BaseException):
                logger.warning("DHT lookup for %s failed: %s", model, result)
                continue
            for entry in result:
                if entry.state is not ServerState.ONLINE:
                    continue
                old = found.get(entry.server_id)
                if old is None or entry.issued_at > old.issued_at:
                    found[entry.server_id] = entry
        self._snapshots[model] = _Snapshot(found, await self._records(found), now)
        return found

    async def _records(self, entries: dict[str, BlockEntry]) -> dict[str, ServerRecord]:
        """Full records (for the servers' measured next-hop latencies), best effort."""
        limit = asyncio.Semaphore(self.config.max_probes)

        async def fetch(server_id: str) -> ServerRecord | None:
            async with limit:
                return await asyncio.wait_for(self.dht.get_record(server_id), self.config.dht_timeout)

        found = await asyncio.gather(*(fetch(s) for s in entries), return_exceptions=True)
        return {r.server_id: r for r in found if isinstance(r, ServerRecord)}

    async def probe(self, entries: dict[str, BlockEntry]) -> None:
        """Measures RTTs to servers with no recent estimate, a bounded number at a time."""
        stale = self.rtt.stale(list(entries), self._clock())
        limit = asyncio.Semaphore(self.config.max_probes)

        async def one(server_id: str) -> None:
            address, fresh = entries[server_id].address, self.rtt.get(server_id) is None
            async with limit:
                try:
                    sample = await self.transport.ping(address, self.config.probe_timeout)
                    if fresh:  # the first call also set up the connection: measure again
                        sample = await self.transport.ping(address, self.config.probe_timeout)
                except SwarmError as error:
                    logger.debug("probe of %s failed: %s", address, error)
                    return
            self.rtt.observe(server_id, sample, self._clock())

        await asyncio.gather(*(one(s) for s in stale))

    def latency_view(self, model: str) -> LatencyView:
        snapshot = self._snapshots.get(model)
        records = snapshot.records.values() if snapshot else ()
        return LatencyView.from_records(records, self.rtt.snapshot())

    def ban(self, server_id: str) -> None:
        duration = self.bans.ban(server_id, self._clock())
        logger.warning("server %s banned for %.1f s", server_id[:8], duration)

    def succeeded(self, server_id: str) -> None:
        """Forgets the server's past failures: it answered."""
        self.bans.succeeded(server_id)

    async def route(
        self,
        model: str,
        num_blocks: int,
        span: BlockRange,
        session_tokens: int,
        after: str | None = None,
        before: str | None = None,
        forward: bool = False,
    ) -> tuple[Route, dict[str, str]]:
        """The best route over `span` and the addresses of its servers.

        `forward` picks a route for a stateless batch call instead: drawn at random with
        servers weighted by forward throughput, so that batches spread over the swarm.

        Asks the DHT again once if the cached view has no route (servers may have joined).
        """
        for refresh in (False, True):
            entries = await self.entries(model, num_blocks, refresh=refresh)
            if not forward:
                await self.probe(entries)
            query = RouteQuery(
                span=span, session_tokens=session_tokens,
                banned=self.bans.banned(self._clock()), after=after, before=before, model=model,
            )
            candidates = [RouteCandidate.from_entry(e) for e in entries.values()]
            try:
                if forward:
                    route = sample_forward_route(candidates, query, self._rng)
                else:
                    route = find_route(candidates, self.latency_view(model), query,
                                       self.config.routing)
            except NoRoute:
                if refresh:
                    raise
                continue
            log = logger.debug if forward else logger.info
            log("route for %s %s: %s", model, span, route.describe())
            return route, {sid: entries[sid].address for sid in route.server_ids}
        raise AssertionError("unreachable")
