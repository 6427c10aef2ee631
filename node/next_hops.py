"""Measures the links to the servers that hold the blocks right after this server's.

Round trips, published in the record (`next_hop_rtt_ms`), let clients price
server-to-server links when they route chained sessions. At most MAX_NEXT_HOPS servers are
measured per period; the estimates are smoothed (`swarm.latency.RttTracker`). Bandwidth,
timed with a payload to the closest next server, becomes the record's network figure.
"""

from __future__ import annotations

import asyncio
import logging
import time

from node.push_client import PushClient
from swarm.dht import SwarmDHT
from swarm.latency import RttTracker
from swarm.records import MAX_NEXT_HOPS, BlockRange, ServerState

logger = logging.getLogger(__name__)


class NextHopProber:
    """Keeps smoothed RTTs to the next block's servers."""

    def __init__(self, dht: SwarmDHT, pinger: PushClient, model: str, num_blocks: int, own_id: str,
                 timeout: float) -> None:
        self.dht = dht
        self.pinger = pinger
        self.model = model
        self.num_blocks = num_blocks
        self.own_id = own_id
        self.timeout = timeout
        self.rtt = RttTracker()
        self._latest: dict[str, float] = {}
        self.bytes_per_s: float | None = None
        """Smoothed bandwidth to the closest next server; None until measured."""

    @property
    def rtt_ms(self) -> dict[str, float]:
        """Estimates (milliseconds) for the servers seen in the latest measurement."""
        return {s: round(v * 1000, 3) for s, v in self._latest.items()}

    async def measure(self, blocks: BlockRange) -> None:
        if blocks.end >= self.num_blocks:
            self._latest = {}
            return
        try:
            entries = await asyncio.wait_for(self.dht.get_block_entries(self.model, blocks.end), self.timeout)
        except (TimeoutError, OSError) as error:
            logger.debug("next-hop lookup for block %d failed: %s", blocks.end, error)
            return
        nexts = sorted((e for e in entries if e.state is ServerState.ONLINE and e.server_id != self.own_id),
                       key=lambda e: e.server_id)[:MAX_NEXT_HOPS]
        samples = await asyncio.gather(*(self._sample(e.server_id, e.address) for e in nexts))
        latest: dict[str, float] = {}
        for entry, sample in zip(nexts, samples):
            if sample is not None:
                latest[entry.server_id] = self.rtt.observe(entry.server_id, sample, time.monotonic())
        self._latest = latest
        if latest:
            closest = min(latest, key=latest.__getitem__)
            sample = await self.pinger.bandwidth(next(e.address for e in nexts if e.server_id == closest))
            if sample is not None:
                old = self.bytes_per_s
                self.bytes_per_s = sample if old is None else 0.7 * old + 0.3 * sample

    async def _sample(self, server_id: str, address: str) -> float | None:
        if self.rtt.get(server_id) is None:
            await self.pinger.ping(address)  # the first call also sets up the connection
        return await self.pinger.ping(address)
