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

from client.ban_policy import BanList, recheckable
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
from swarm.rpc import ChannelPool

logger = logging.getLogger(__name__)

VANISHED_POLL_S = 0.5
"""How often routing asks the DHT again while a block seen served before has no records."""

RECHECK_INTERVAL_S = 0.5
"""While every holder of a block is banned: how often banned servers are health-checked again."""


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
        self.transport: Transport = transport or GrpcTransport(config.tensor_limits,
                                                               ChannelPool(config.load_security()),
                                                               config.wire_compression)
        """How sessions and batch calls reach servers (tests inject a fake)."""
        self.bans = BanList(config.ban_base_s, config.ban_max_s)
        self.rtt = RttTracker()
        self._clock = clock
        self._snapshots: dict[str, _Snapshot] = {}
        self._seen_blocks: dict[str, set[int]] = {}
        """Blocks of each model that some ONLINE server was seen holding (see `route`)."""
        self._rng = random.Random()

    @classmethod
    async def connect(cls, config: ClientConfig) -> SwarmClient:
        if not config.initial_peers:
            raise ValueError("the client needs at least one initial peer (HOST:PORT of a DHT node)")
        security = config.load_security()  # a bad --tls-ca fails here, before any work
        # client mode: peers do not add us to their tables (we store nothing, may leave any time)
        dht = await SwarmDHT.start(config.dht_host, 0, list(config.initial_peers),
                                   config=DhtConfig(client_mode=True, swarm_token=security.swarm_token))
        return cls(config, dht, transport=GrpcTransport(config.tensor_limits, ChannelPool(security),
                                                        config.wire_compression))

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
        records = await self._records(found)
        if self.config.adapter:  # only servers whose record lists it (no record: not known to have it)
            found = {s: e for s, e in found.items()
                     if s in records and self.config.adapter in records[s].adapters}
        if self.config.quantization:  # likewise: only records that state the required quantization
            found = {s: e for s, e in found.items()
                     if s in records and records[s].quantization == self.config.quantization}
        self._snapshots[model] = _Snapshot(found, records, now)
        seen = self._seen_blocks.setdefault(model, set())
        seen.update(b for e in found.values() for b in range(e.blocks.start, e.blocks.end))
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
        """Measures RTTs to servers with no recent estimate, one ping per address (however many
        ids point at it), a bounded number at a time. An address that fails its ping is
        banned with all its ids: routes avoid it without trying to open a session there."""
        now = self._clock()
        banned = self.bans.banned(now, [(s, e.address) for s, e in entries.items()])
        by_address: dict[str, list[str]] = {}
        for server_id in self.rtt.stale([s for s in entries if s not in banned], now):
            by_address.setdefault(entries[server_id].address, []).append(server_id)
        limit = asyncio.Semaphore(self.config.max_probes)

        async def one(address: str, server_ids: list[str]) -> None:
            async with limit:
                try:
                    sample = await self.transport.ping(address, self.config.probe_timeout)
                    if any(self.rtt.get(s) is None for s in server_ids):
                        # the first call also set up the connection: measure again
                        sample = await self.transport.ping(address, self.config.probe_timeout)
                except SwarmError as error:
                    logger.info("probe of %s failed (%s); banning it and its %d server id(s)", address,
                                error, len(server_ids))
                    for server_id in server_ids:
                        self.ban(server_id, address, error)
                    return
            for server_id in server_ids:
                self.rtt.observe(server_id, sample, self._clock())

        await asyncio.gather(*(one(a, ids) for a, ids in by_address.items()))

    def latency_view(self, model: str) -> LatencyView:
        snapshot = self._snapshots.get(model)
        records = snapshot.records.values() if snapshot else ()
        return LatencyView.from_records(records, self.rtt.snapshot())

    def ban(self, server_id: str, address: str = "", error: SwarmError | None = None) -> None:
        """Avoids a failed server: its id and its address (every id announced there)."""
        recheck = error is not None and recheckable(error)
        duration = self.bans.ban(server_id, self._clock(), address, recheck)
        logger.warning("server %s at %s banned for %.1f s%s", server_id[:8], address or "?", duration,
                       " (until it answers a health check)" if recheck else "")

    def succeeded(self, server_id: str) -> None:
        """Forgets the server's past failures: it answered."""
        self.bans.succeeded(server_id)

    def replicas(self, model: str, blocks: BlockRange, exclude: frozenset[str]) -> list[tuple[str, str]]:
        """(id, address) of unbanned servers holding all of `blocks`, other than `exclude` and
        other than ids at the excluded servers' addresses (from the cached view)."""
        snapshot = self._snapshots.get(model)
        if snapshot is None:
            return []
        entries = snapshot.entries.values()
        banned = self.bans.banned(self._clock(), [(e.server_id, e.address) for e in entries])
        taken = {e.address for e in entries if e.server_id in exclude}
        return sorted((e.server_id, e.address) for e in entries
                      if e.blocks.start <= blocks.start and blocks.end <= e.blocks.end
                      and e.server_id not in exclude and e.server_id not in banned and e.address not in taken)

    async def _wait_for_unban(self, entries: dict[str, BlockEntry], span: BlockRange, deadline: float) -> bool:
        """Every holder of some block is banned: health-checks banned servers whose failure
        looked like a dead process (a restart lifts the ban), else waits for the first ban
        to end. False if nothing banned holds blocks of `span` or the wait would pass `deadline`."""
        holders = [(s, e.address) for s, e in entries.items()
                   if e.blocks.start < span.end and span.start < e.blocks.end]
        now = self._clock()
        limit = asyncio.Semaphore(self.config.max_probes)

        async def check(address: str) -> None:
            async with limit:
                try:
                    await self.transport.ping(address, self.config.probe_timeout)
                except SwarmError:
                    return
            logger.info("banned server at %s answers a health check again: ban lifted", address)
            self.bans.lift(address, [s for s, a in holders if a == address])

        lifted = self.bans.recheckable(now, holders)
        await asyncio.gather(*(check(a) for a in lifted))
        now = self._clock()
        if any(not self.bans.is_banned(s, now, a) for s, a in holders if a in lifted):
            return True
        end = self.bans.earliest_end(now, holders)
        if end is None or now >= deadline:
            return False
        await asyncio.sleep(max(min(end - now, RECHECK_INTERVAL_S, deadline - now), 0.0))
        return True

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

        Asks the DHT again once if the cached view has no route (servers may have joined);
        if bans are what leaves a block without servers, waits up to `ban_wait_s` for one to
        end (or for a restarted server to pass a health check) before raising NoRoute. So it
        does, asking the DHT every `VANISHED_POLL_S`, for a block whose records vanished: one
        it saw served before (in a churning swarm the DHT nodes that stored a block's records
        may die before the servers re-announce). A block never seen fails at once.
        """
        deadline = self._clock() + self.config.ban_wait_s
        refreshed = False
        vanished_wait = 0.0
        while True:
            entries = await self.entries(model, num_blocks)
            if not forward:
                await self.probe(entries)
            servers = [(sid, e.address) for sid, e in entries.items()]
            query = RouteQuery(
                span=span, session_tokens=session_tokens, banned=self.bans.banned(self._clock(), servers),
                after=after, before=before, model=model,
            )
            candidates = [RouteCandidate.from_entry(e) for e in entries.values()]
            try:
                if forward:
                    route = sample_forward_route(candidates, query, self._rng)
                else:
                    route = find_route(candidates, self.latency_view(model), query, self.config.routing)
            except NoRoute as error:
                if not refreshed:
                    refreshed = True
                    await self.entries(model, num_blocks, refresh=True)
                    continue
                if await self._wait_for_unban(entries, span, deadline):
                    continue
                pause = min(VANISHED_POLL_S, deadline - self._clock(), self.config.ban_wait_s - vanished_wait)
                if error.block not in self._seen_blocks.get(model, ()) or pause <= 0:
                    raise
                await asyncio.sleep(pause)
                vanished_wait += pause  # (bounds the wait in real time too, whatever the clock says)
                refreshed = False  # the next miss asks the DHT again
                continue
            log = logger.debug if forward else logger.info
            log("route for %s %s: %s", model, span, route.describe())
            return route, {sid: entries[sid].address for sid in route.server_ids}
