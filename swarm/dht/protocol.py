"""The DHT's UDP protocol: the `kademlia` package's wire format and routing, hardened.

Speaks rpcudp's framing (0x00 request / 0x01 response, 20-byte message id, msgpack
body) and Kademlia's RPCs: ping, store, find_node, find_value. The routing table is the
`kademlia` package's. What differs from `kademlia.protocol.KademliaProtocol`, and why:

- Every datagram is validated before use (length, msgpack, RPC name, argument count
  and types, node ids of 20 bytes, IP-literal addresses); garbage is logged at DEBUG and
  dropped, never raised into the event loop. Answers are only accepted from the address
  asked.
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
import ipaddress
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
from swarm.dht.config import MAX_DATAGRAM_BYTES, MAX_PEERS_PER_REPLY, MAX_REQUEST_BYTES, DhtConfig
from swarm.dht.crawl import Peer, Reply
from swarm.dht.keys import check_entry_fits, key_digest, parse_key
from swarm.dht.storage import EntryStore
from swarm.errors import CodecError, RecordRejected

logger = logging.getLogger(__name__)

Address = tuple[str, int]
_ID_BYTES = 20
_REQUEST, _RESPONSE = b"\x00", b"\x01"
_MAX_UNREACHABLE = 4096  # bound on remembered dead nodes
_UNPACK_ERRORS = (umsgpack.UnpackException, RecursionError, ValueError, TypeError, OverflowError)


class MalformedMessage(Exception):
    """A datagram we do not understand (internal: logged and dropped, never raised out)."""


@dataclass(frozen=True)
class PingJob:
    """Ping a contact the routing table wants to keep; drop it if it does not answer."""

    peer: Peer


@dataclass(frozen=True)
class HandOffJob:
    """Send a node new to us the keys it is now among the nearest to (Kademlia 2.5)."""

    peer: Peer


Job = PingJob | HandOffJob


def peer_of(node: Any) -> Peer:
    """Our Peer for a `kademlia.node.Node`."""
    return Peer(bytes(node.id), str(node.ip), int(node.port))


def _node_id(value: object, *, optional: bool = False) -> bytes | None:
    if value is None and optional:
        return None
    if not isinstance(value, bytes) or len(value) != _ID_BYTES:
        raise MalformedMessage(f"not a {_ID_BYTES}-byte id: {value!r:.60}")
    return value


def _peer_triple(item: object) -> Peer:
    if not isinstance(item, (list, tuple)) or len(item) != 3:
        raise MalformedMessage("peer is not [id, ip, port]")
    node_id, host, port = item
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise MalformedMessage(f"bad peer address {host!r:.60}:{port!r:.10}")
    try:
        ipaddress.ip_address(host)  # never a host name: sendto would resolve it, blocking
    except ValueError:
        raise MalformedMessage(f"peer host {host!r:.60} is not an IP address") from None
    return Peer(_node_id(node_id) or b"", host, port)


def parse_reply(data: object) -> Reply:
    """A find_node/find_value answer: [[id, ip, port], ...] or {"value": b, "nodes": [...]}."""
    value = None
    nodes = data
    if isinstance(data, dict):
        value, nodes = data.get("value"), data.get("nodes", [])
        if not isinstance(value, bytes):
            raise MalformedMessage("find_value answer without a bytes value")
    if not isinstance(nodes, (list, tuple)):
        raise MalformedMessage("peer list is not a list")
    return Reply(tuple(_peer_triple(item) for item in nodes[:MAX_PEERS_PER_REPLY]), value)


class SwarmProtocol(asyncio.DatagramProtocol):
    """One DHT node's UDP endpoint: answers RPCs and sends requests (see module doc)."""

    def __init__(
        self, node_id: bytes, store: EntryStore, config: DhtConfig, enqueue: Callable[[Job], None]
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
        self._transport.sendto(_REQUEST + msg_id + data, address)
        return future

    def sender_id(self) -> bytes | None:
        """The id we put in requests (None in client mode: do not add us)."""
        return None if self.config.client_mode else self.node_id

    # ---- incoming -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        address: Address = (str(addr[0]), int(addr[1]))
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
        if len(response) > MAX_DATAGRAM_BYTES - 1 - _ID_BYTES:
            logger.error("answer to %s of %d bytes does not fit a datagram; dropped", name, len(response))
            return
        if self._transport is not None:
            self._transport.sendto(_RESPONSE + msg_id + response, address)

    # ---- RPCs (sender address first, then the request's arguments) -----------------------

    def rpc_stun(self, sender: Address) -> list[object]:
        return list(sender)

    def rpc_ping(self, sender: Address, nodeid: object) -> bytes:
        self.welcome(sender, _node_id(nodeid, optional=True))
        return self.node_id

    def rpc_find_node(self, sender: Address, nodeid: object, key: object) -> list[list[object]]:
        peer_id, dkey = _node_id(nodeid, optional=True), _node_id(key) or b""
        self.welcome(sender, peer_id)
        return self.neighbors(dkey, exclude=sender)

    def rpc_find_value(self, sender: Address, nodeid: object, key: object) -> object:
        peer_id, dkey = _node_id(nodeid, optional=True), _node_id(key) or b""
        self.welcome(sender, peer_id)
        nodes = self.neighbors(dkey, exclude=sender)
        entries = self.store.get(dkey, time.time())
        if not entries:
            return nodes
        return {"value": encode_value(entries), "nodes": nodes}

    def rpc_store(self, sender: Address, nodeid: object, key: object, value: object) -> bool:
        """Verifies and merges the entries of `value`; True if all were accepted."""
        peer_id, dkey = _node_id(nodeid, optional=True), _node_id(key) or b""
        if not isinstance(value, bytes):
            raise MalformedMessage("store value is not bytes")
        self.welcome(sender, peer_id)
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

    def welcome(self, address: Address, node_id: bytes | None) -> None:
        """Adds a node that talked to us; hands it the keys it should now store."""
        if node_id is None or node_id == self.node_id:
            return
        self._unreachable.pop(node_id, None)
        node = Node(node_id, address[0], address[1])
        if self.router.is_new_node(node) and not self.config.client_mode:
            self._enqueue(HandOffJob(peer_of(node)))  # scanning our keys is the worker's job
        self.router.add_contact(node)

    def forget(self, peer: Peer) -> None:
        """Counts a request `peer` left unanswered; drops it after `max_failures` in a row.

        (`kademlia` drops a contact at its first silence; one lost datagram or one slow
        answer should not cost a good contact.)
        """
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
        self.welcome(peer.address, peer.node_id)

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
