"""Publishes the server's signed record on the DHT every update period.

The record is rebuilt at each announcement from live state (lifecycle phase, free cache,
measurements; see `node.record.build_record`), so the swarm map follows the server within
one period; state changes (ONLINE, DRAINING, OFFLINE) are announced at once by the caller
through `announce_now`. The record's times are set by `SwarmDHT.stamp`, not here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from swarm.dht import SwarmDHT
from swarm.identity import Identity
from swarm.records import ServerRecord

logger = logging.getLogger(__name__)


async def announce_record(dht: SwarmDHT, identity: Identity, record: ServerRecord, ttl: float,
                          timeout: float) -> None:
    """Publishes `record` once; a failure is logged (the next period tries again)."""
    try:
        await asyncio.wait_for(dht.announce(identity, record, ttl), timeout)
    except (TimeoutError, OSError) as error:
        # the next period tries again; records outlive a few missed announcements
        logger.warning("announcing %s blocks %s failed: %s", record.state.name, record.blocks, error)
    else:
        logger.debug("announced %s blocks %s of %s", record.state.name, record.blocks, record.model)


class Announcer:
    """Keeps one server's record fresh on the DHT."""

    def __init__(self, dht: SwarmDHT, identity: Identity, make_record: Callable[[], ServerRecord],
                 period: float, ttl: float, timeout: float,
                 before_periodic: Callable[[], Awaitable[None]] | None = None) -> None:
        self.dht = dht
        self.identity = identity
        self.make_record = make_record
        self.period = period
        self.ttl = ttl
        self.timeout = timeout
        self.before_periodic = before_periodic
        """Runs before each periodic announcement (e.g. to re-measure latencies)."""

    async def announce_now(self) -> None:
        await announce_record(self.dht, self.identity, self.make_record(), self.ttl, self.timeout)

    async def run(self, stop: asyncio.Event) -> None:
        """Re-announces every period until `stop` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.period)
            except TimeoutError:
                if self.before_periodic is not None:
                    await self.before_periodic()
                await self.announce_now()
