"""The swarm's Kademlia DHT: signed per-server entries, merged per key.

    keys       the key space (block, index, models and server keys) and digests
    storage    what one node stores: per key, newest signed entry per server (pure)
    crawl      the iterative lookup, with the network call passed in (pure)
    protocol   the UDP endpoint: kademlia's wire format and routing table, hardened
    node       one DHT node: join, store, look up, upkeep
    swarm_map  which servers cover which blocks (pure)
    swarm_dht  `SwarmDHT`, the API node/ and client/ use

Signing and verifying entries is `swarm.codec.entries`; identities `swarm.identity`.
"""

from swarm.dht.config import DhtConfig
from swarm.dht.swarm_dht import SwarmDHT
from swarm.dht.swarm_map import AnnouncedModel, ServerView, SwarmMap

__all__ = ["DhtConfig", "AnnouncedModel", "ServerView", "SwarmDHT", "SwarmMap"]
