"""The greedy rebalancing loop: every (jittered) period, ask whether moving helps the swarm.

The decision is the pure `node.placement.should_move` over the swarm read from the DHT;
this module only supplies the timing and calls back the server to migrate. Jitter comes
from a passed-in random source, so servers that started together do not decide together.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from node.placement import ServerSpan, should_move
from node.swarm_view import read_spans
from swarm.dht import SwarmDHT
from swarm.records import BlockRange

logger = logging.getLogger(__name__)


class Rebalancer:
    """Calls `migrate(target)` when the swarm would be better off with this server elsewhere."""

    def __init__(self, dht: SwarmDHT, model: str, num_blocks: int, period: float, quality: float,
                 timeout: float, rng: random.Random) -> None:
        self.dht = dht
        self.model = model
        self.num_blocks = num_blocks
        self.period = period
        self.quality = quality
        self.timeout = timeout
        self.rng = rng

    async def decide(self, me: ServerSpan) -> BlockRange | None:
        spans = await read_spans(self.dht, self.model, self.num_blocks, self.timeout)
        target = should_move(spans.values(), me, self.num_blocks, self.quality)
        logger.debug("rebalance check for %s: %d servers seen, target %s", me.blocks, len(spans), target)
        return target

    async def run(self, stop: asyncio.Event, me: Callable[[], ServerSpan | None],
                  migrate: Callable[[BlockRange], Awaitable[None]]) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.period * self.rng.uniform(0.5, 1.5))
            except TimeoutError:
                current = me()
                if current is None:
                    continue
                target = await self.decide(current)
                if target is not None and not stop.is_set():
                    await migrate(target)
