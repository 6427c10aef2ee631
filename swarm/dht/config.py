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
- With a swarm token every datagram carries 32 more bytes (its MAC, `swarm.dht.seal`):
  the answer bound above leaves room for it.
- The routing table holds at most `ksize` contacts per bucket and at most 160 buckets
  (one per bit of the id space; in practice ~log2(N) of them fill), each contact having
  answered a request of ours, one node id per address (`swarm.dht.protocol`).
- Entries: a block or model entry is < 512 B (`EntryLimits.max_compact_entry_bytes`;
  ~424 B with every field at its limit), typically ~180 B, so 256 typical servers (or
  130 at worst) covering one block fit one answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.codec.entries import DEFAULT_ENTRY_LIMITS, EntryLimits
from swarm.dht.ratelimit import RateLimit
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
    rpc_timeout: float = 1.0
    """Seconds to wait for the answer to one UDP request (short: a dead contact costs a
    lookup at most this, once; see `unreachable_for`)."""
    max_failures: int = 1
    """Unanswered requests in a row after which a contact leaves the routing table
    (1: at once, so a killed node costs one `rpc_timeout`, not one per lookup)."""
    unreachable_for: float = 60.0
    """Seconds a contact dropped for silence is not asked again (unless it answers a ping
    of ours, e.g. after it sent us a request)."""
    lookup_timeout: float = 5.0
    """Seconds one lookup may take: the crawl stops at 90% of it and returns what the
    nodes that answered by then said, so callers whose own timeout is this long or longer
    (the client's `dht_timeout`, 10 s) get partial results instead of nothing."""
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
    swarm_token: str | None = field(default=None, repr=False)
    """A private swarm's shared secret: when set, every datagram carries an HMAC of it and
    datagrams without a valid one are dropped unread (`swarm.dht.seal`). None: open swarm."""
    store_limit: RateLimit = RateLimit(rate=20.0, burst=400.0)
    """Store requests one source (ip, port) may make: a server announcing 30 blocks sends
    one node ~35 stores per period, and a node joining gets a burst of hand-offs; beyond
    it stores are refused (answered False)."""
    contact_limit: RateLimit = RateLimit(rate=0.5, burst=2.0)
    """Pings we send per source (ip, port) to check a node that sent us a request and is
    not in our table (only an answer to our ping puts it there)."""
    max_sources: int = 4096
    """Sources (ip, port) whose rate-limit buckets are remembered (least recently used
    forgotten first)."""
    entry_limits: EntryLimits = DEFAULT_ENTRY_LIMITS
    """Bounds on entries from peers."""
    storage: StorageLimits = field(default_factory=StorageLimits)
    """Bounds on what this node stores."""

