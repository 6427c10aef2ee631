"""The swarm token's datagram MAC: only nodes that know the token can talk to the DHT.

When `DhtConfig.swarm_token` is set, every datagram a node sends ends with a 32-byte
HMAC-SHA256 over all the bytes before it, and every datagram it receives must end with
a valid one: anything else is dropped before it is parsed (no answer, no routing-table
entry, no rate-limit bucket, nothing stored). So a node without the token can neither
join a private swarm nor read it.

The MAC key is SHA-256 of a domain-separated string holding the token (never the token
itself: the same token may serve other purposes, e.g. gRPC metadata). The MAC
authenticates; it does not encrypt (an eavesdropper on the path still sees entries,
which are public records signed by their servers anyway) and does not stop a replay of
a captured datagram by someone on the path (signed entries carry their own replay
protection). Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

MAC_BYTES = 32
_DOMAIN = b"swarm-llm/dht/datagram-mac/v1\x00"


class DatagramSeal:
    """Appends and checks the MAC of one swarm token (see the module docstring)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("a swarm token is a non-empty string")
        self._key = hashlib.sha256(_DOMAIN + token.encode("utf-8")).digest()

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def seal(self, data: bytes) -> bytes:
        """`data` with its MAC appended."""
        return data + self._mac(data)

    def open(self, datagram: bytes) -> bytes | None:
        """The datagram without its MAC, or None if the MAC is missing or wrong."""
        if len(datagram) < MAC_BYTES:
            return None
        data, mac = datagram[:-MAC_BYTES], datagram[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(data)):
            return None
        return data
