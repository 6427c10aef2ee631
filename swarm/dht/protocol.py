"""The DHT's UDP protocol: the `kademlia` package's wire format and routing, hardened.

Speaks rpcudp's framing (0x00 request / 0x01 response, 20-byte message id, msgpack
body) and Kademlia's RPCs: ping, store, find_node, find_value. The routing table is the
`kademlia` package's. What differs from `kademlia.protocol.KademliaProtocol`, and why:

- With a swarm token, a datagram without its valid MAC is dropped before anything else
  (`swarm.dht.seal`). Every datagram is then validated before use (length, msgpack, RPC
  name, argument count and types, node ids of 20 bytes, IP-literal addresses;
  `swarm.dht.wire`); garbage is logged at DEBUG and dropped, never raised into the event
  loop. Answers are only accepted from the address asked.
- A node enters our routing table only after it ANSWERED a request of ours, never
  because it sent us one: a request from a node we do not hold at that address at most
  queues one ping of ours (`VerifyJob`, rate-limited per source address by
  `DhtConfig.contact_limit`), and the id in the ping's answer is what we add. One
  address holds one node id (a ping answer with a new id replaces the old one: a
  restarted node). A contact that leaves a request unanswered is dropped at once
  (`DhtConfig.max_failures`) and not asked again for `unreachable_for` seconds.
- Stores are rate-limited per source address (`DhtConfig.store_limit`).
- `rpc_store` verifies every signed entry (signature, key digest, expiry, size, body
  kind, key fit) and MERGES it into the per-key dictionary (`swarm.dht.storage`).
- `rpc_find_value` returns the key's entries AND the nearest nodes, so a lookup can go
  on to merge the answers of all of the k nearest nodes.
- Handing keys to a joining node compares distances to the stored key digests
  (`kademlia` digests them a second time) and sends them in batches that fit a request.
- Nothing is spawned here: hand-offs and pings of stale contacts go to a job queue that
  the owning `DhtNode` drains in supervised tasks.
- A node in client mode sends no node id, so peers never add it to their tables.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import umsgpack
from kademlia.node import Node
from kademlia.routing import RoutingTable

from swarm.codec.entries import decode_value, encode_value, open_entry
from swarm.dht.config import MAX_DATAGRAM_BYTES, MAX_REQUEST_BYTES, DhtConfig
from swarm.dht.crawl import Peer
from swarm.dht.keys import check_entry_fits, key_digest, parse_key
from swarm.dht.ratelimit import SourceLimits
from swarm.dht.seal import MAC_BYTES, DatagramSeal
from swarm.dht.storage import EntryStore
from swarm.dht.wire import ID_BYTES as _ID_BYTES
from swarm.dht.wire import MalformedMessage, node_id_of, parse_reply, peer_of

__all__ = ["Address", "HandOffJob", "Job", "MalformedMessage", "PingJob", "SwarmProtocol", "VerifyJob",
           "parse_reply", "peer_of"]
from swarm.errors import CodecError, RecordRejected

logger = logging.getLogger(__name__)

Address = tuple[str, int]
_REQUEST, _RESPONSE = b"\x00", b"\x01"
_MAX_UNREACHABLE = 4096  # bound on remembered dead nodes
_UNPACK_ERRORS = (umsgpack.UnpackException, RecursionError, ValueError, TypeError, OverflowError)


@dataclass(frozen=True)
class PingJob:
    """Ping a contact the routing table wants to keep; drop it if it does not answer."""

    peer: Peer


@dataclass(frozen=True)
class HandOffJob:
    """Send a node new to us the keys it is now among the nearest to (Kademlia 2.5)."""

    peer: Peer


@dataclass(frozen=True)
class VerifyJob:
    """Ping an address that sent us a request; the node id that answers joins our table."""

    address: tuple[str, int]


Job = PingJob | HandOffJob | VerifyJob


class SwarmProtocol(asyncio.DatagramProtocol):
    """One DHT node's UDP endpoint: answers RPCs and sends requests (see module doc)."""

    def __init__(
        self, node_id: bytes, store: EntryStore, config: DhtConfig, enqueue: Callable[[Job], bool]
    ) -> None:
        self.node_id = node_id
        self.source_node = Node(node_id)
        self.router = RoutingTable(self, config.ksize, self.source_node)
        self.store = store
        self.config = config
        self._enqueue = enqueue
        self._transport: asyncio.DatagramTransport | None = None
        self._outstanding: dict[bytes, tuple[asyncio.Future[object | None], Address]] = {}
        self._failures: dict[bytes, int] = {}  # node id -> requests unanswered in a row
        self._unreachable: dict[bytes, float] = {}  # node id -> monotonic time to retry it
        self._seal = DatagramSeal(config.swarm_token) if config.swarm_token is not None else None
        self._store_limits: SourceLimits[Address] = SourceLimits(config.store_limit, config.max_sources)
        self._contact_limits: SourceLimits[Address] = SourceLimits(config.contact_limit, config.max_sources)
        self._verifying: set[Address] = set()  # addresses with a VerifyJob queued or running
        self._handlers: dict[str, tuple[int, Callable[..., object]]] = {
            "ping": (1, self.rpc_ping),
            "stun": (0, self.rpc_stun),
            "store": (3, self.rpc_store),
            "find_node": (2, self.rpc_find_node),
            "find_value": (2, self.rpc_find_value),
        }

    # ---- asyncio plumbing ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def connection_lost(self, exc: Exception | None) -> None:
        for future, _ in list(self._outstanding.values()):
            if not future.done():
                future.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable" of a dead peer and the like: its request times out
        logger.debug("UDP error on DHT node %s: %s", self.node_id.hex()[:8], exc)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # ---- outgoing -----------------------------------------------------------------------

    def request(self, address: Address, name: str, *args: object) -> asyncio.Future[object | None]:
        """Sends RPC `name`; the future yields the answer, or None after `rpc_timeout`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object | None] = loop.create_future()
        if self._transport is None or self._transport.is_closing():
            future.set_result(None)
            return future
        data = umsgpack.packb([name, list(args)])
        if len(data) > MAX_REQUEST_BYTES:
            raise CodecError(f"{name} request of {len(data)} bytes exceeds {MAX_REQUEST_BYTES}")
        msg_id = os.urandom(_ID_BYTES)
        self._outstanding[msg_id] = (future, address)
        timer = loop.call_later(self.config.rpc_timeout, _resolve, future, None)

        def settled(_: asyncio.Future[object | None]) -> None:
            timer.cancel()
            self._outstanding.pop(msg_id, None)

        future.add_done_callback(settled)
        self._send(_REQUEST + msg_id + data, address)
        return future

    def _send(self, datagram: bytes, address: Address) -> None:
        if self._transport is None:
            return
        self._transport.sendto(self._seal.seal(datagram) if self._seal else datagram, address)

    def sender_id(self) -> bytes | None:
        """The id we put in requests (None in client mode: do not add us)."""
        return None if self.config.client_mode else self.node_id

    # ---- incoming -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        address: Address = (str(addr[0]), int(addr[1]))
        if self._seal is not None:
            opened = self._seal.open(data)
            if opened is None:  # not of our swarm: counts nowhere, costs one HMAC
                logger.debug("dropped datagram of %d bytes from %s:%s: no valid MAC", len(data), *address)
                return
            data = opened
        try:
            self._handle_datagram(data, address)
        except MalformedMessage as e:
            logger.debug("dropped datagram of %d bytes from %s:%s: %s", len(data), *address, e)
        except Exception:  # noqa: BLE001 - last resort: no datagram may take the node down
            logger.exception("BUG: datagram of %d bytes from %s:%s broke the handler", len(data), *address)

    def _handle_datagram(self, data: bytes, address: Address) -> None:
        if len(data) < 1 + _ID_BYTES + 1:
            raise MalformedMessage("too short")
        kind, msg_id = data[:1], data[1 : 1 + _ID_BYTES]
        if kind == _REQUEST and len(data) > 1 + _ID_BYTES + MAX_REQUEST_BYTES:
            raise MalformedMessage("request too long")
        if kind not in (_REQUEST, _RESPONSE):
            raise MalformedMessage(f"unknown kind {kind!r}")
        try:
            message = umsgpack.unpackb(data[1 + _ID_BYTES :])
        except _UNPACK_ERRORS as e:
            raise MalformedMessage(f"not msgpack: {type(e).__name__}") from None
        if kind == _RESPONSE:
            self._accept_response(msg_id, message, address)
        else:
            self._answer(msg_id, message, address)

    def _accept_response(self, msg_id: bytes, message: object, address: Address) -> None:
        pending = self._outstanding.get(msg_id)
        if pending is None or pending[1] != address:
            raise MalformedMessage("answer to no request of ours")
        if not pending[0].done():
            pending[0].set_result(message)

    def _answer(self, msg_id: bytes, message: object, address: Address) -> None:
        if not (isinstance(message, (list, tuple)) and len(message) == 2):
            raise MalformedMessage("request is not [name, args]")
        name, args = message
        handler = self._handlers.get(name) if isinstance(name, str) else None
        if handler is None or not isinstance(args, (list, tuple)) or len(args) != handler[0]:
            raise MalformedMessage(f"unknown RPC or wrong arguments: {name!r:.40}")
        response = umsgpack.packb(handler[1](address, *args))
        if len(response) > MAX_DATAGRAM_BYTES - 1 - _ID_BYTES - MAC_BYTES:
            logger.error("answer to %s of %d bytes does not fit a datagram; dropped", name, len(response))
            return
        self._send(_RESPONSE + msg_id + response, address)

    # ---- RPCs (sender address first, then the request's arguments) -----------------------

    def rpc_stun(self, sender: Address) -> list[object]:
        return list(sender)

    def rpc_ping(self, sender: Address, nodeid: object) -> bytes:
        self.heard_from(sender, node_id_of(nodeid, optional=True))
        return self.node_id

    def rpc_find_node(self, sender: Address, nodeid: object, key: object) -> list[list[object]]:
        peer_id, dkey = node_id_of(nodeid, optional=True), node_id_of(key) or b""
        self.heard_from(sender, peer_id)
        return self.neighbors(dkey, exclude=sender)

    def rpc_find_value(self, sender: Address, nodeid: object, key: object) -> object:
        peer_id, dkey = node_id_of(nodeid, optional=True), node_id_of(key) or b""
        self.heard_from(sender, peer_id)
        nodes = self.neighbors(dkey, exclude=sender)
        entries = self.store.get(dkey, time.time())
        if not entries:
            return nodes
        return {"value": encode_value(entries), "nodes": nodes}

    def rpc_store(self, sender: Address, nodeid: object, key: object, value: object) -> bool:
        """Verifies and merges the entries of `value`; True if all were accepted."""
        peer_id, dkey = node_id_of(nodeid, optional=True), node_id_of(key) or b""
        if not isinstance(value, bytes):
            raise MalformedMessage("store value is not bytes")
        self.heard_from(sender, peer_id)
        if not self._store_limits.allow(sender, time.monotonic()):
            logger.debug("store from %s:%s refused: over its rate limit", *sender)
            return False
        try:
            raws = decode_value(value, self.config.entry_limits)
        except CodecError as e:
            logger.debug("store from %s:%s rejected: %s", *sender, e)
            return False
        return all([self.accept_entry(dkey, raw, sender) for raw in raws]) and bool(raws)

    def accept_entry(self, dkey: bytes, raw: bytes, sender: Address) -> bool:
        """Verifies one serialized entry for `dkey` and merges it into storage."""
        now = time.time()
        try:
            entry = open_entry(raw, None, now, self.config.entry_limits)
            if key_digest(entry.key) != dkey:
                raise RecordRejected(f"entry for key {entry.key!r} sent under another key")
            check_entry_fits(parse_key(entry.key), entry)
            self.store.put(dkey, entry, now)
        except RecordRejected as e:
            logger.debug("store from %s:%s rejected: %s", *sender, e)
            return False
        return True

    # ---- routing ------------------------------------------------------------------------

    def neighbors(
        self, dkey: bytes, exclude: Address | None = None, k: int | None = None
    ) -> list[list[object]]:
        """[id, ip, port] of the known nodes nearest to `dkey`."""
        skip = Node(b"\0" * _ID_BYTES, *exclude) if exclude else None
        found = self.router.find_neighbors(Node(dkey), k=k or self.config.ksize, exclude=skip)
        return [[n.id, n.ip, n.port] for n in found]

    def heard_from(self, address: Address, node_id: bytes | None) -> None:
        """A request came from `address` claiming `node_id`: refresh it, or check it.

        A contact we hold at that address moves to its bucket's tail (Kademlia's LRU);
        anyone else gets at most a ping of ours, rate-limited per source; only its answer
        puts it in the table (`admit`). Client-mode nodes send no id and are not pinged.
        """
        if node_id is None or node_id == self.node_id:
            return
        if self._id_at(address) == node_id:
            self.router.add_contact(Node(node_id, address[0], address[1]))
            return
        if address in self._verifying or not self._contact_limits.allow(address, time.monotonic()):
            return
        if self._enqueue(VerifyJob(address)):
            self._verifying.add(address)

    def verified(self, address: Address, answer: object | None) -> None:
        """The answer of `address` to our VerifyJob ping (None: it did not answer)."""
        self._verifying.discard(address)
        if isinstance(answer, bytes) and len(answer) == _ID_BYTES:
            self.admit(Peer(answer, *address), authoritative=True)

    def admit(self, peer: Peer, *, authoritative: bool) -> None:
        """Adds a node that answered us; hands it the keys it should now store.

        `authoritative`: the node itself told us its id (a ping answer), so it replaces
        any other id we hold at its address; otherwise (an answer to find_node/store,
        where the id came from whoever named the peer) a different id already held at
        that address wins.
        """
        if peer.node_id == self.node_id:
            return
        held = self._id_at(peer.address)
        if held is not None and held != peer.node_id:
            if not authoritative:
                return
            self.router.remove_contact(Node(held, peer.host, peer.port))
        self._unreachable.pop(peer.node_id, None)
        node = Node(peer.node_id, peer.host, peer.port)
        if self.router.is_new_node(node) and not self.config.client_mode:
            self._enqueue(HandOffJob(peer))  # scanning our keys is the worker's job
        self.router.add_contact(node)

    def _id_at(self, address: Address) -> bytes | None:
        """The node id our table holds at `address` (a bounded scan: <= 160 * ksize)."""
        for bucket in self.router.buckets:
            for node in bucket.nodes.values():
                if node.ip == address[0] and node.port == address[1]:
                    return bytes(node.id)
        return None

    def forget(self, peer: Peer) -> None:
        """Counts a request `peer` left unanswered; drops it after `max_failures` in a row."""
        failures = self._failures.get(peer.node_id, 0) + 1
        if failures < self.config.max_failures:
            self._failures[peer.node_id] = failures
            return
        self._failures.pop(peer.node_id, None)
        self.router.remove_contact(Node(peer.node_id, peer.host, peer.port))
        # Other nodes keep naming a dead node in their answers until they notice too;
        # without this every lookup would wait out its timeout again.
        now = time.monotonic()
        if len(self._unreachable) >= _MAX_UNREACHABLE:
            self._unreachable = {k: t for k, t in self._unreachable.items() if t > now}
        if len(self._unreachable) < _MAX_UNREACHABLE:
            self._unreachable[peer.node_id] = now + self.config.unreachable_for

    def is_unreachable(self, peer: Peer) -> bool:
        """True if `peer` recently left the table for silence (not worth asking)."""
        until = self._unreachable.get(peer.node_id)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._unreachable[peer.node_id]
            return False
        return True

    def answered(self, peer: Peer) -> None:
        """`peer` answered: it is (again) a good contact."""
        self._failures.pop(peer.node_id, None)
        self.admit(peer, authoritative=False)

    def should_hand_off(self, peer: Peer, dkey: bytes) -> bool:
        """True if a node new to us should get our entries of key `dkey` from us.

        Kademlia 2.5: when it is nearer to the key than our farthest known neighbour of
        the key and we are nearer than all of them. Distances are to the stored digest
        itself (`kademlia` digests it a second time, so it hands the wrong keys).
        """
        new = Node(peer.node_id, peer.host, peer.port)
        target = Node(dkey)
        near = self.router.find_neighbors(target, exclude=new)
        if not near:
            return True
        new_close = bool(new.distance_to(target) < near[-1].distance_to(target))
        we_closest = bool(self.source_node.distance_to(target) < near[0].distance_to(target))
        return new_close and we_closest

    def call_ping(self, node: Any) -> asyncio.Future[None]:
        """Called by the routing table when a bucket is full: queue a ping of its head."""
        self._enqueue(PingJob(peer_of(node)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)  # the table wraps this in ensure_future; the work is queued
        return done


def _resolve(future: asyncio.Future[object | None], value: object | None) -> None:
    if not future.done():
        future.set_result(value)
