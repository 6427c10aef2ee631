"""`SwarmDHT`: what node/ and client/ use to publish and find servers on the DHT.

    dht = await SwarmDHT.start("0.0.0.0", 31337, [PeerAddress("bootstrap.example", 31337)])
    await dht.announce(identity, record, ttl=120)       # a server, every period
    entries = await dht.get_block_entries(model, 7)     # a client routing
    swarm = await dht.get_swarm_map(model)              # `swarm status`
    await dht.stop()

An announce stores, each signed by the server: the full record under `server/<id>`, a
compact BlockEntry under every block key of its range, and a ModelEntry under the
model's index key and under `swarm/models` (see `swarm.dht.keys`). Lookups return only
verified, unexpired entries, newest per server. Every network await is bounded by the
timeouts of `DhtConfig`; a lookup that times out returns what it found so far.
Works on asyncio and uvloop event loops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from types import TracebackType
from typing import TypeVar

from swarm.addresses import PeerAddress
from swarm.codec.entries import VerifiedEntry, sign_entry
from swarm.dht import keys
from swarm.dht.config import DhtConfig
from swarm.dht.node import DhtNode
from swarm.dht.swarm_map import AnnouncedModel, SwarmMap, build_swarm_map, announced_model_of
from swarm.identity import Identity
from swarm.records import BlockEntry, ModelEntry, ServerRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SwarmDHT:
    """A running DHT node with the swarm's publish and lookup operations."""

    def __init__(self, node: DhtNode, task: asyncio.Task[None]) -> None:
        """Use `SwarmDHT.start`."""
        self.node = node
        self._task = task
        self._last_issued = 0.0

    @classmethod
    async def start(
        cls,
        host: str = "0.0.0.0",
        port: int = 0,
        initial_peers: Sequence[PeerAddress] = (),
        *,
        config: DhtConfig = DhtConfig(),
        node_id: bytes | None = None,
    ) -> SwarmDHT:
        """Binds host:port (0: any free port), joins through `initial_peers`, starts upkeep.

        Joining does not fail when no initial peer answers (they may start later): the
        node keeps retrying in the background; see `num_peers`.
        """
        node = DhtNode(config, node_id)
        await node.listen(host, port)
        task = asyncio.create_task(node.run(), name=f"dht-node-{node.port}")  # owned: stop() ends it
        task.add_done_callback(_log_crash)
        dht = cls(node, task)
        if not initial_peers:
            return dht
        try:
            reached = await asyncio.wait_for(node.bootstrap([(p.host, p.port) for p in initial_peers]),
                                             config.bootstrap_timeout)
        except TimeoutError:
            reached = 0
        except BaseException:  # cancelled while joining: release the socket and the task
            await dht.stop()
            raise
        if not reached:
            logger.warning("no initial DHT peer of %s answered; will retry", " ".join(map(str, initial_peers)))
        return dht

    @property
    def host(self) -> str:
        return self.node.host

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def num_peers(self) -> int:
        """How many DHT nodes this one knows."""
        return self.node.num_peers()

    def stop(self) -> asyncio.Future[None]:
        """Closes the socket and cancels the upkeep at once; await the result to wait for it."""
        self.node.close()
        self._task.cancel()
        return asyncio.ensure_future(_ended(self._task))

    async def __aenter__(self) -> SwarmDHT:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- publishing ---------------------------------------------------------------------

    async def announce(self, identity: Identity, record: ServerRecord, ttl: float) -> int:
        """Publishes `record` (and its block and model entries) for `ttl` seconds.

        The record's server_id, issued_at and expiration are set here. Returns how many
        of the keys were stored on at least one node. Raises RecordRejected for a record
        peers would refuse (e.g. an address that is not host:port).
        """
        record = self.stamp(identity, record, ttl)
        signed = signed_entries(identity, record)
        stored = sum(await self._gather_bounded([self._store(key, raw) for key, raw in signed]))
        logger.debug(
            "server %s announced %s blocks %s: %d/%d keys stored",
            identity.server_id[:8], record.model, record.blocks, stored, len(signed),
        )
        return stored

    def stamp(self, identity: Identity, record: ServerRecord, ttl: float) -> ServerRecord:
        """`record` with its server_id, issued_at (now) and expiration (now + ttl) set.

        The one place where a server's record gets its times: `announce` stamps what it
        publishes, and a server stamps the record it hands out in InfoResponse here too.
        """
        # strictly increasing, so two announces in one clock tick are not seen as a replay
        issued_at = max(time.time(), self._last_issued + 1e-3)
        self._last_issued = issued_at
        return dataclasses.replace(
            record, server_id=identity.server_id, issued_at=issued_at, expiration=issued_at + ttl
        )

    async def _store(self, key: str, raw: bytes) -> bool:
        try:
            acks = await asyncio.wait_for(self.node.store(key, [raw]), 2 * self.node.config.lookup_timeout)
        except TimeoutError:
            logger.warning("storing %r timed out", key)
            return False
        return acks > 0

    # ---- lookups ------------------------------------------------------------------------

    async def get_entries(self, key: str) -> list[VerifiedEntry]:
        """Verified entries under any swarm key, newest first (empty on timeout)."""
        try:
            return await asyncio.wait_for(self.node.find(key), 2 * self.node.config.lookup_timeout)
        except TimeoutError:
            logger.warning("looking up %r timed out", key)
            return []

    async def get_block_entries(self, model: str, block: int) -> list[BlockEntry]:
        """The servers that announced block `block` of `model`, newest first."""
        found = await self.get_entries(keys.block_key(model, block))
        return [e.body for e in found if isinstance(e.body, BlockEntry)]

    async def get_record(self, server_id: str) -> ServerRecord | None:
        """The full record of a server, or None if none is live."""
        for entry in await self.get_entries(keys.server_key(server_id)):
            if isinstance(entry.body, ServerRecord):
                return entry.body
        return None

    async def get_model_entries(self, model: str) -> list[ModelEntry]:
        """What each server of `model` states about it."""
        found = await self.get_entries(keys.index_key(model))
        return [e.body for e in found if isinstance(e.body, ModelEntry)]

    async def get_announced_model(self, model: str) -> AnnouncedModel | None:
        """The shape of `model` most of its servers agree on, or None if nobody serves it."""
        return announced_model_of(model, await self.get_model_entries(model))

    async def list_models(self) -> list[AnnouncedModel]:
        """The models announced on the swarm, by name."""
        found = [e.body for e in await self.get_entries(keys.MODELS_KEY) if isinstance(e.body, ModelEntry)]
        infos = (announced_model_of(name, found) for name in sorted({e.model for e in found}))
        return [info for info in infos if info is not None]

    async def get_swarm_map(self, model: str, num_blocks: int | None = None) -> SwarmMap:
        """Which servers cover each block of `model` (num_blocks 0 if the model is unknown)."""
        hidden_size = 0
        if num_blocks is None:
            info = await self.get_announced_model(model)
            if info is None:
                return build_swarm_map(model, 0, 0, {})
            num_blocks, hidden_size = info.num_blocks, info.hidden_size
        found = await self._gather_bounded([self.get_block_entries(model, b) for b in range(num_blocks)])
        return build_swarm_map(model, num_blocks, hidden_size, dict(enumerate(found)))

    async def _gather_bounded(self, jobs: Iterable[Awaitable[T]]) -> list[T]:
        limit = asyncio.Semaphore(self.node.config.max_parallel)

        async def bounded(job: Awaitable[T]) -> T:
            async with limit:
                return await job

        return await asyncio.gather(*(bounded(job) for job in jobs))


def signed_entries(identity: Identity, record: ServerRecord) -> list[tuple[str, bytes]]:
    """(key, signed entry) for everything an announce of a stamped `record` stores."""
    record_key = keys.server_key(identity.server_id)
    signed = [(record_key, sign_entry(identity, record, record_key))]
    block_entry = BlockEntry.from_record(record)
    for block in range(record.blocks.start, record.blocks.end):
        key = keys.block_key(record.model, block)
        signed.append((key, sign_entry(identity, block_entry, key)))
    if record.model_num_blocks <= 0:
        logger.warning("server %s announces %s without model_num_blocks: not listed as a model",
                       identity.server_id[:8], record.model)
        return signed
    model_entry = ModelEntry(
        identity.server_id, record.model, record.model_num_blocks, record.hidden_size,
        issued_at=record.issued_at, expiration=record.expiration,
    )
    for key in (keys.index_key(record.model), keys.MODELS_KEY):
        signed.append((key, sign_entry(identity, model_entry, key)))
    return signed


async def _ended(task: asyncio.Task[None]) -> None:
    await asyncio.wait({task})  # unlike `await task`, never mistakes our own cancellation
    error = None if task.cancelled() else task.exception()
    if error is not None:
        raise error


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("DHT node upkeep crashed", exc_info=task.exception())
