"""Parsing what peers send: node ids, peer triples and lookup answers (pure).

Every value from a datagram is checked here before use; anything unexpected raises
`MalformedMessage`, which the protocol logs at DEBUG and drops.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from swarm.dht.config import MAX_PEERS_PER_REPLY
from swarm.dht.crawl import Peer, Reply

ID_BYTES = 20


class MalformedMessage(Exception):
    """A datagram we do not understand (internal: logged and dropped, never raised out)."""


def peer_of(node: Any) -> Peer:
    """Our Peer for a `kademlia.node.Node`."""
    return Peer(bytes(node.id), str(node.ip), int(node.port))


def node_id_of(value: object, *, optional: bool = False) -> bytes | None:
    if value is None and optional:
        return None
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise MalformedMessage(f"not a {ID_BYTES}-byte id: {value!r:.60}")
    return value


def peer_triple(item: object) -> Peer:
    if not isinstance(item, (list, tuple)) or len(item) != 3:
        raise MalformedMessage("peer is not [id, ip, port]")
    node_id, host, port = item
    if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
        raise MalformedMessage(f"bad peer address {host!r:.60}:{port!r:.10}")
    try:
        ipaddress.ip_address(host)  # never a host name: sendto would resolve it, blocking
    except ValueError:
        raise MalformedMessage(f"peer host {host!r:.60} is not an IP address") from None
    return Peer(node_id_of(node_id) or b"", host, port)


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
    return Reply(tuple(peer_triple(item) for item in nodes[:MAX_PEERS_PER_REPLY]), value)
