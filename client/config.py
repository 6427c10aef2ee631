"""The client's configuration: frozen data (times in seconds).

Fields that are command-line flags of `swarm generate`, `chat` and `status` say so in
their metadata (`swarm.config_flags`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client.routing import RoutingConfig
from swarm.addresses import PeerAddress
from swarm.codec.limits import TensorLimits
from swarm.config_flags import flag


@dataclass(frozen=True)
class ClientConfig:
    """How a client finds and talks to block servers."""

    initial_peers: tuple[PeerAddress, ...] = field(metadata=flag("DHT peers of the swarm", metavar="HOST:PORT"))
    """DHT peers to bootstrap from (at least one)."""
    dht_host: str = "127.0.0.1"
    """Interface of the client's own DHT node."""
    connect_timeout: float = 10.0
    """Opening a session on a server."""
    step_timeout: float = 30.0
    """One inference step on one server; a silent server past this is failed over."""
    push_allowance: float = 6.0
    """Extra wait for a server's result in a chained route: it first pushes to the next
    server, which may take up to that server's --push-timeout before it gives up."""
    forward_timeout: float = 300.0
    """One batch forward/backward call."""
    dht_timeout: float = 10.0
    """One DHT lookup."""
    probe_timeout: float = 2.0
    """One RTT probe of a server."""
    max_probes: int = 16
    """RTT probes (and record lookups) in flight at once."""
    max_retries: int = 8
    """Failovers one session step may do before giving up."""
    ban_base_s: float = 5.0
    """First ban of a failed server; doubles with each consecutive failure."""
    ban_max_s: float = 300.0
    """Longest ban."""
    map_ttl: float = 5.0
    """How long a fetched view of the swarm is reused before asking the DHT again."""
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    """Route search and pricing; `routing.chained` also turns server-to-server pushes on."""
    tensor_limits: TensorLimits = field(default_factory=lambda: TensorLimits(max_bytes=512 << 20))
    """Bounds on tensors decoded from servers."""
