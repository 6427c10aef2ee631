"""The placement view of a model's swarm, read from the DHT's per-block entries.

Peers are credited by `node.placement.span_from_entry`, the same function the server
applies to its own entry; not here: the decisions (`node.placement`)."""

from __future__ import annotations

import asyncio
import logging

from node.placement import ServerSpan, span_from_entry
from swarm.dht import SwarmDHT

logger = logging.getLogger(__name__)


async def read_spans(dht: SwarmDHT, model: str, num_blocks: int, timeout: float) -> dict[str, ServerSpan]:
    """Every server seen on the model's block keys (its newest entry), as placement sees it."""
    found = await asyncio.gather(*(
        asyncio.wait_for(dht.get_block_entries(model, block), timeout) for block in range(num_blocks)
    ), return_exceptions=True)
    newest: dict[str, tuple[float, ServerSpan]] = {}
    for result in found:
        if isinstance(result, BaseException):
            logger.debug("block lookup for %s failed: %s", model, result)
            continue
        for e in result:
            if e.server_id not in newest or e.issued_at > newest[e.server_id][0]:
                newest[e.server_id] = (e.issued_at, span_from_entry(e))
    return {server_id: span for server_id, (_, span) in newest.items()}
