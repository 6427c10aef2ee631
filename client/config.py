"""The client's configuration: frozen data (times in seconds).

Fields that are command-line flags of `swarm generate`, `chat` and `status` say so in
their metadata (`swarm.config_flags`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from client.routing import RoutingConfig
from swarm import settings
from swarm.addresses import PeerAddress
from swarm.codec.limits import TensorLimits
from swarm.config_flags import flag
from swarm.model.options import QUANTIZATIONS
from swarm.security import RpcSecurity


@dataclass(frozen=True)
class ClientConfig:
    """How a client finds and talks to block servers."""

    initial_peers: tuple[PeerAddress, ...] = field(default=(), metadata=flag(
        "DHT peers of the swarm", metavar="HOST:PORT", default_text="$SWARM_INITIAL_PEERS"))
    """DHT peers to bootstrap from (at least one; commands take $SWARM_INITIAL_PEERS when
    none are given, see `command_line_peers`)."""
    tls_ca: Path | None = field(default=None, metadata=flag(
        "CA certificate(s) (PEM) to verify servers of a private swarm that serve TLS", metavar="FILE"))
    """CA the servers' TLS certificates are verified against; None: plaintext gRPC."""
    swarm_token: str | None = field(default=None, repr=False, metadata=flag(
        "token of a private swarm, sent with every call and DHT message", metavar="TOKEN",
        default_text="$SWARM_TOKEN, else none"))
    """Token of a private swarm; None: $SWARM_TOKEN, else none (a public swarm)."""
    dht_host: str = "127.0.0.1"
    """Interface of the client's own DHT node."""
    connect_timeout: float = 10.0
    """Closing a session politely on a server."""
    open_timeout: float = 2.0
    """Opening a session on a server: a real open is one round trip plus a KV-cache
    reservation (~1 ms on loopback; a new channel adds TCP+HTTP/2 (+TLS) handshakes, ~3-4
    RTTs, under 1.5 s even at 300 ms RTT). A dead or silent server (a fake record) is
    given up on after this and failed over, so fakes cost seconds, not minutes."""
    step_timeout: float = 30.0
    """One inference step on one server; a silent server past this is failed over (a
    step's write that stalls that long fails within another quarter of it: `swarm.write_watch`)."""
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
    ban_wait_s: float = 15.0
    """With every holder of a needed block banned, how long routing may wait for a ban to
    end (or a banned server to pass a health check) before raising NoRoute."""
    verify_fraction: float = field(default=0.05, metadata=flag(
        "fraction of inference steps recomputed on a second server of the same blocks to catch "
        "lying servers (only where a replica exists)", metavar="F"))
    """Fraction of steps whose segments are recomputed on another server (0 = off, 1 = all)."""
    adapter: str | None = field(default=None, metadata=flag(
        "apply the LoRA adapter the swarm serves under this name (routes only through servers that "
        "list it)", metavar="NAME"))
    """A served adapter's name (`swarm-node start --adapter NAME=DIR`); None: the base model."""
    quantization: str | None = field(default=None, metadata=flag(
        "route only through servers whose blocks are quantized so (none: full precision only)",
        choices=QUANTIZATIONS, default_text="any"))
    """Required `swarm-node start --quantization` of every server on a route; None: any."""
    wire_compression: str = field(default="none", metadata=flag(
        "how hidden states travel between client and servers: none (exact), auto (float16 for "
        "float32 activations: half the bytes, for slow links), float16, bfloat16 or blockwise8", metavar="KIND",
        choices=("none", "auto", "float16", "bfloat16", "blockwise8")))
    """Wire compression of hidden states per session and Forward (`swarm.codec.compression.policy`).
    Off by default: outputs then equal a local run's exactly (float16 rounding changes
    sampled tokens and, rarely, greedy ones); a link slower than the compute wants "auto"."""
    verify_seed: int | None = None
    """Seed of the step sampler (None: random); tests fix it."""
    map_ttl: float = 5.0
    """How long a fetched view of the swarm is reused before asking the DHT again."""
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    """Route search and pricing; `routing.chained` also turns server-to-server pushes on."""
    tensor_limits: TensorLimits = field(default_factory=lambda: TensorLimits(max_bytes=512 << 20))
    """Bounds on tensors decoded from servers."""

    def load_security(self) -> RpcSecurity:
        """The CA file read and checked, with the token (else $SWARM_TOKEN); raises
        `swarm.security.SecurityConfigError` if unusable."""
        return RpcSecurity.load(tls_ca=self.tls_ca, swarm_token=self.swarm_token or settings.swarm_token())


def command_line_peers(given: tuple[PeerAddress, ...]) -> tuple[PeerAddress, ...]:
    """--initial-peers, else $SWARM_INITIAL_PEERS; a one-line usage error without either."""
    from swarm.cli_edge import UsageError

    if given:
        return given
    try:
        peers = tuple(PeerAddress.parse(text) for text in settings.initial_peers())
    except ValueError as error:
        raise UsageError(f"${settings.INITIAL_PEERS_ENV}: {error}") from None
    if not peers:
        raise UsageError(f"no DHT peers: give --initial-peers HOST:PORT or set ${settings.INITIAL_PEERS_ENV}")
    return peers
