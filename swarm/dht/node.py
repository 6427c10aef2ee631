"""One DHT node: joins, stores and looks up signed entries; keeps its table fresh.

`DhtNode` owns the UDP endpoint (`SwarmProtocol`), the local `EntryStore` and the
background work, all started by `run()` in one TaskGroup: workers that hand keys to
joining nodes and ping stale contacts, a loop that refreshes the routing table (or
retries the bootstrap while no peer is known), and a loop that purges expired entries.

There is deliberately no republishing of stored values (the `kademlia` package
republishes whole values every hour, which for a popular key exceeds the 8 KB request
limit): servers re-announce their entries every period, and entries expire otherwise.

Lookups verify every entry they receive and merge the answers of the k nearest nodes
(newest issued_at per server). Every network wait is bounded by `DhtConfig` timeouts.
This module knows keys and entries as bytes; what they mean is `swarm.dht.swarm_dht`'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence

from kademlia.node import Node

from swarm.codec.entries import VerifiedEntry, decode_value, encode_value, open_entry
from swarm.dht.config import MAX_STORE_VALUE_BYTES, DhtConfig
from swarm.dht.crawl import Peer, Reply, crawl, distance
from swarm.dht.keys import check_entry_fits, key_digest, parse_key
from swarm.dht.protocol import (
    Address,
    HandOffJob,
    Job,
    MalformedMessage,
    PingJob,
    SwarmProtocol,
    VerifyJob,
    parse_reply,
    peer_of,
)
from swarm.dht.storage import EntryStore, newest_per_server
from swarm.errors import CodecError, RecordRejected

logger = logging.getLogger(__name__)


def batches(entries: Sequence[bytes], max_bytes: int = MAX_STORE_VALUE_BYTES) -> list[list[bytes]]:
    """Splits entries into groups whose DhtValue fits one store request."""
    groups: list[list[bytes]] = [[]]
    size = 0
    for raw in entries:
        cost = len(raw) + 3  # a DhtValue frames each entry with a tag and a length
        if groups[-1] and size + cost > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(raw)
        size += cost
    return [g for g in groups if g]


class DhtNode:
    """A Kademlia node storing per-server signed entries (see the module docstring)."""

    def __init__(self, config: DhtConfig = DhtConfig(), node_id: bytes | None = None) -> None:
        self.config = config
        self.node_id = node_id if node_id is not None else os.urandom(20)
        if len(self.node_id) != 20:
            raise ValueError("a DHT node id has 20 bytes")
        self.storage = EntryStore(config.storage)
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(config.max_pending_jobs)
        self.protocol = SwarmProtocol(self.node_id, self.storage, config, self._enqueue)
        self._initial_peers: list[Address] = []
        self.host = ""
        self.port = 0
        self._family = socket.AF_INET

    async def listen(self, host: str, port: int) -> None:
        """Binds the UDP socket (port 0: any free port, then read `port`)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self.protocol, local_addr=(host, port))
        sock = transport.get_extra_info("socket")
        self._family = sock.family if sock is not None else socket.AF_INET
        self.host, self.port = transport.get_extra_info("sockname")[:2]
        logger.debug("DHT node %s bound to %s:%s", self.node_id.hex()[:8], self.host, self.port)

    def close(self) -> None:
        """Closes the socket; pending requests resolve as unanswered."""
        self.protocol.close()

    def num_peers(self) -> int:
        """How many nodes the routing table holds."""
        return sum(len(bucket) for bucket in self.protocol.router.buckets)

    async def bootstrap(self, initial_peers: Sequence[Address]) -> int:
        """Joins through `initial_peers` (host names allowed); returns how many answered."""
        self._initial_peers = list(initial_peers)
        addresses = await self._resolve(initial_peers)
        me = self.protocol.sender_id()
        answers = await asyncio.gather(*(self.protocol.request(a, "ping", me) for a in addresses))
        reached = 0
        for address, answer in zip(addresses, answers, strict=True):
            if isinstance(answer, bytes) and len(answer) == 20 and answer != self.node_id:
                self.protocol.admit(Peer(answer, *address), authoritative=True)
                reached += 1
            else:
                logger.warning("DHT peer %s:%s did not answer", *address)
        if reached:
            await self.find_nodes(self.node_id)  # fills our table and makes us known nearby
        return reached

    async def _resolve(self, peers: Sequence[Address]) -> list[Address]:
        loop = asyncio.get_running_loop()
        found: list[Address] = []
        for host, port in peers:
            try:
                infos = await loop.getaddrinfo(host, port, family=self._family, type=socket.SOCK_DGRAM)
            except (socket.gaierror, UnicodeError) as e:
                logger.warning("cannot resolve DHT peer %s:%s: %s", host, port, e)
                continue
            found.extend((str(info[4][0]), int(info[4][1])) for info in infos[:1])
        return found

    # ---- lookups and stores -------------------------------------------------------------

    async def _ask(self, peer: Peer, rpc: str, dkey: bytes) -> Reply | None:
        if self.protocol.is_unreachable(peer):
            return None
        answer = await self.protocol.request(peer.address, rpc, self.protocol.sender_id(), dkey)
        if answer is None:
            self.protocol.forget(peer)
            return None
        try:
            reply = parse_reply(answer)
        except MalformedMessage as e:
            logger.debug("malformed %s answer from %s: %s", rpc, peer, e)
            return None
        self.protocol.answered(peer)
        return reply

    def _seeds(self, dkey: bytes) -> list[Peer]:
        near = self.protocol.router.find_neighbors(Node(dkey), k=self.config.ksize)
        return [peer_of(n) for n in near]

    async def _crawl(self, dkey: bytes, rpc: str) -> tuple[list[Peer], list[tuple[Peer, bytes]]]:
        result = await crawl(
            dkey,
            self._seeds(dkey),
            lambda peer: self._ask(peer, rpc, dkey),
            ksize=self.config.ksize,
            alpha=self.config.alpha,
            timeout=self.crawl_timeout,
            exclude=self.node_id,
        )
        return result.nearest, result.values

    @property
    def crawl_timeout(self) -> float:
        """A crawl's deadline: 90% of `lookup_timeout`, so that a caller waiting
        `lookup_timeout` gets the partial result (verifying entries takes the rest)."""
        return 0.9 * self.config.lookup_timeout

    async def find_nodes(self, dkey: bytes) -> list[Peer]:
        """The k nodes nearest to `dkey` that answer, nearest first."""
        nearest, _ = await self._crawl(dkey, "find_node")
        return nearest

    async def store(self, key: str, entries: Sequence[bytes]) -> int:
        """Stores signed entries under `key` on the k nearest nodes; returns how many took all."""
        dkey = key_digest(key)
        nearest = await self.find_nodes(dkey)
        stored = 0
        if not self.config.client_mode and self._among_nearest(dkey, nearest):
            accepted = [self.protocol.accept_entry(dkey, raw, (self.host, self.port)) for raw in entries]
            stored = int(all(accepted))
        groups = batches(entries)
        results = await asyncio.gather(*(self._store_at(peer, dkey, groups) for peer in nearest))
        return stored + sum(results)

    def _among_nearest(self, dkey: bytes, nearest: list[Peer]) -> bool:
        if len(nearest) < self.config.ksize:
            return True
        return distance(self.node_id, dkey) < distance(nearest[-1].node_id, dkey)

    async def _store_at(self, peer: Peer, dkey: bytes, groups: list[list[bytes]]) -> bool:
        accepted = True
        for group in groups:
            value = encode_value(group)
            me = self.protocol.sender_id()
            answer = await self.protocol.request(peer.address, "store", me, dkey, value)
            if answer is None:
                self.protocol.forget(peer)
                return False
            self.protocol.answered(peer)
            accepted = accepted and answer is True
        return accepted

    async def find(self, key: str) -> list[VerifiedEntry]:
        """The verified entries under `key`, merged over the k nearest nodes, newest first."""
        dkey = key_digest(key)
        parsed = parse_key(key)
        _, values = await self._crawl(dkey, "find_value")
        raws = set(self.storage.get(dkey, time.time()))
        for peer, value in values:
            try:
                raws.update(decode_value(value, self.config.entry_limits))
            except CodecError as e:
                logger.debug("bad value for %r from %s: %s", key, peer, e)
        now = time.time()
        entries = []
        for raw in raws:
            try:
                entry = open_entry(raw, key, now, self.config.entry_limits, parsed.entry_kind)
                check_entry_fits(parsed, entry)
            except RecordRejected as e:
                logger.debug("dropped an entry for %r: %s", key, e)
                continue
            entries.append(entry)
        return newest_per_server(entries)

    # ---- background work ----------------------------------------------------------------

    async def run(self) -> None:
        """Hand-off and ping workers, table refresh and storage purge; runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self.config.handoff_workers):
                group.create_task(self._work())
            group.create_task(self._refresh_loop())
            group.create_task(self._purge_loop())

    def _enqueue(self, job: Job) -> bool:
        try:
            self._jobs.put_nowait(job)
        except asyncio.QueueFull:
            logger.warning(
                "DHT node %s: job queue full, dropped a %s", self.node_id.hex()[:8], type(job).__name__
            )
            return False
        return True

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            if isinstance(job, PingJob):
                answer = await self.protocol.request(job.peer.address, "ping", self.protocol.sender_id())
                if answer is None:
                    self.protocol.forget(job.peer)
                else:
                    self.protocol.answered(job.peer)
            elif isinstance(job, HandOffJob):
                await self._hand_off(job.peer)
            elif isinstance(job, VerifyJob):
                answer = None
                try:
                    answer = await self.protocol.request(job.address, "ping", self.protocol.sender_id())
                finally:
                    self.protocol.verified(job.address, answer)

    async def _hand_off(self, peer: Peer) -> None:
        for scanned, (dkey, entries) in enumerate(self.storage.items(time.time()), start=1):
            if self.protocol.should_hand_off(peer, dkey):
                if not await self._store_at(peer, dkey, batches(entries)):
                    logger.debug("handing keys to %s failed", peer)
                    return
            if scanned % 256 == 0:
                await asyncio.sleep(0)  # a node storing many keys stays responsive

    async def _refresh_loop(self) -> None:
        while True:
            lonely = self.num_peers() == 0 and bool(self._initial_peers)
            config = self.config
            await asyncio.sleep(config.retry_bootstrap_interval if lonely else config.refresh_interval)
            if self.num_peers() == 0 and self._initial_peers:
                try:
                    await asyncio.wait_for(self.bootstrap(self._initial_peers), self.config.bootstrap_timeout)
                except TimeoutError:
                    logger.warning("DHT bootstrap through %s timed out", self._initial_peers)
                continue
            await self.find_nodes(self.node_id)
            await self.find_nodes(os.urandom(20))

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.purge_interval)
            keys = self.storage.purge(time.time())
            logger.debug("DHT node %s stores %d keys", self.node_id.hex()[:8], keys)
