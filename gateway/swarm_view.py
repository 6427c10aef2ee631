"""`GET /api/v1/swarm`: the swarm map as `swarm status --json` prints it, plus what the
gateway sees of each server.

The map comes from the DHT through the code behind `swarm status`
(`client.status_command.fetch_maps`, `SwarmMap.to_json_dict`, docs/status-json.md).
Each server object gains:

    "reachable": bool        the server answered the gateway's health ping just now
    "ping_ms": float | null  that ping's round trip (null when unreachable)
    "next_hop_rtt_ms": {server_id: ms}  round trips the server measured to the servers
                             it may push to (from its full DHT record; {} if unknown)

and the top level gains "gateway": {"model", "update_period_s", "checked_at"}. A
killed server keeps its DHT entries until they expire, so it stays on the map, marked
unreachable, as soon as the next ping fails.

The DHT and the channels belong to the swarm client's loop thread: the work runs there,
and the HTTP loop awaits it. One snapshot is shared by all pollers for a quarter of
the page's update period, so many open pages cost one round of pings; the DHT is read
again once per update period, in the background (a snapshot never waits for 30 block
lookups, only for its pings: a killed server shows on the next refresh).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from client.runtime import LoopThread
from client.status_command import fetch_maps
from client.swarm_client import SwarmClient
from swarm.dht import SwarmMap
from swarm.errors import SwarmError

logger = logging.getLogger(__name__)

MAX_PINGS = 16
"""Health pings in flight at once."""


class SwarmView:
    """Builds (and briefly caches) the /api/v1/swarm document."""

    def __init__(self, client: SwarmClient, loop: LoopThread, model_name: str, update_period: float,
                 ping_timeout: float) -> None:
        self.client = client
        self.loop = loop
        self.model_name = model_name
        self.update_period = update_period
        self.ping_timeout = ping_timeout
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._map: tuple[float, list[SwarmMap], dict[str, dict[str, float]]] | None = None
        """When the DHT was last read, the maps, and each server's next-hop latencies."""
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        """The background re-read of the DHT map (on the client's loop), while one runs."""

    async def snapshot(self) -> dict[str, Any]:
        """The document (called on the HTTP loop). The DHT map is looked up again once it
        is an update period old; the pings are redone once a quarter period old, so that a
        dead server shows as unreachable on the page's next refresh without every refresh
        paying for 30 block lookups."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.update_period / 4:
                refresh_map = self._map is None or now - self._map[0] > self.update_period
                future = asyncio.run_coroutine_threadsafe(self._collect(refresh_map), self.loop.loop)
                self._cached = (now, await asyncio.wrap_future(future))
            return self._cached[1]

    async def _collect(self, refresh_map: bool) -> dict[str, Any]:
        if self._map is None:
            await self._read_map()
        elif refresh_map and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.get_running_loop().create_task(self._read_map_quietly())
        assert self._map is not None
        _, maps, next_hops = self._map
        addresses = sorted({s.address for m in maps for s in m.servers})
        limit = asyncio.Semaphore(MAX_PINGS)
        rtts = dict(zip(addresses, await asyncio.gather(*(self._ping(a, limit) for a in addresses))))
        return {"models": [_model_json(m, rtts, next_hops) for m in maps],
                "gateway": {"model": self.model_name, "update_period_s": self.update_period,
                            "checked_at": time.time()}}

    async def _read_map(self) -> None:
        maps = [m for m in await fetch_maps(self.client.dht, None) if m.num_blocks > 0]
        servers = [s for m in maps for s in m.servers]
        limit = asyncio.Semaphore(MAX_PINGS)
        records = await asyncio.gather(*(self._next_hops(s.server_id, limit) for s in servers))
        self._map = (time.monotonic(), maps, dict(zip((s.server_id for s in servers), records)))

    async def _read_map_quietly(self) -> None:
        """`_read_map` in the background: a failure keeps the previous map (and is logged)."""
        try:
            await self._read_map()
        except (SwarmError, TimeoutError, OSError) as error:
            logger.warning("reading the swarm map failed (%s); showing the previous one", error)

    async def _ping(self, address: str, limit: asyncio.Semaphore) -> float | None:
        async with limit:
            try:
                return await self.client.transport.ping(address, self.ping_timeout)
            except SwarmError:
                return None

    async def _next_hops(self, server_id: str, limit: asyncio.Semaphore) -> dict[str, float]:
        async with limit:
            try:
                record = await asyncio.wait_for(self.client.dht.get_record(server_id), self.ping_timeout * 2)
            except (SwarmError, TimeoutError):
                return {}
        return dict(record.next_hop_rtt_ms) if record is not None else {}


def _model_json(swarm: SwarmMap, rtts: dict[str, float | None], next_hops: dict[str, dict[str, float]]) -> dict[str, Any]:
    body = swarm.to_json_dict()
    for server in body["servers"]:
        rtt = rtts.get(server["address"])
        server["reachable"] = rtt is not None
        server["ping_ms"] = None if rtt is None else round(rtt * 1000, 3)
        server["next_hop_rtt_ms"] = {a: round(ms, 3) for a, ms in next_hops.get(server["server_id"], {}).items()}
    return body
