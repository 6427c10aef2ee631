"""Settings of a DHT node and the size bounds of its wire format.

Size bounds, and what bounds each:

- A request datagram carries at most `MAX_REQUEST_BYTES` (8 KB) of msgpack, the limit of
  the `kademlia`/rpcudp wire format we speak. A store request frames its `DhtValue` in
  < 100 B, so `MAX_STORE_VALUE_BYTES` (8,000 B) of entries go in one store: a full
  record (< 4,096 B, `EntryLimits.max_entry_bytes`; ~2.1 KB at worst) always fits.
- An answer is one UDP datagram (at most 65,507 B over IPv4). The largest answer is a
  `find_value` hit: the key's entries, capped at `StorageLimits.max_value_bytes`
  (56,000 B) plus 3 B of framing each (at most `max_entries_per_key` = 256 of them),
  and up to `ksize` neighbour triples of < 80 B: < 56,000 + 768 + 1,600 + 64 B.
- Entries: a block or model entry is < 512 B (`EntryLimits.max_compact_entry_bytes`;
  ~424 B with every field at its limit), typically ~180 B, so 256 typical servers (or
  130 at worst) covering one block fit one answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.codec.entries import DEFAULT_ENTRY_LIMITS, EntryLimits
from swarm.dht.storage import StorageLimits

MAX_REQUEST_BYTES = 8192
"""Most msgpack bytes in a request (rpcudp refuses to send more)."""
MAX_DATAGRAM_BYTES = 65_507
"""Largest UDP payload over IPv4; nothing we send is larger."""
MAX_STORE_VALUE_BYTES = 8000
"""Most DhtValue bytes in one store request (its framing takes < 100 B more)."""
MAX_PEERS_PER_REPLY = 64
"""Most peers read from one find_node/find_value answer (the rest is ignored)."""


@dataclass(frozen=True)
class DhtConfig:
    """How a DHT node behaves; the defaults suit a swarm on the internet."""

    ksize: int = 20
    """Kademlia's k: bucket size, and how many nodes store each key."""
    alpha: int = 3
    """Kademlia's alpha: queries in flight during a lookup."""
    rpc_timeout: float = 2.0
    """Seconds to wait for the answer to one UDP request."""
    max_failures: int = 2
    """Unanswered requests in a row after which a contact leaves the routing table."""
    unreachable_for: float = 60.0
    """Seconds a contact dropped for silence is not asked again (unless it talks to us)."""
    lookup_timeout: float = 10.0
    """Seconds one lookup or store (a whole crawl) may take; partial results after it."""
    bootstrap_timeout: float = 10.0
    """Seconds joining through the initial peers may take."""
    refresh_interval: float = 600.0
    """Seconds between routing-table refreshes (a lookup of our own id and a random one)."""
    retry_bootstrap_interval: float = 5.0
    """Seconds between bootstrap retries while no peer is known (peers that start later)."""
    purge_interval: float = 60.0
    """Seconds between sweeps of expired entries out of storage."""
    max_parallel: int = 16
    """Keys stored or looked up at once by one announce or swarm-map call."""
    handoff_workers: int = 4
    """Tasks sending entries to joining nodes and pinging stale contacts."""
    max_pending_jobs: int = 4096
    """Queued hand-offs and pings beyond which new ones are dropped (logged)."""
    client_mode: bool = False
    """True for a node that only looks up (e.g. `swarm status`): peers never add it to
    their routing tables, so it never stores keys and leaves no dead contact behind."""
    entry_limits: EntryLimits = DEFAULT_ENTRY_LIMITS
    """Bounds on entries from peers."""
    storage: StorageLimits = field(default_factory=StorageLimits)
    """Bounds on what this node stores."""

