"""The block server's configuration: frozen data filled by the CLI (`node.start_command`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from node.scheduler import DEFAULT_BATCH_SHARE, Scheduling
from swarm.codec.limits import TensorLimits
from swarm.records import BlockRange


@dataclass(frozen=True)
class ServerConfig:
    """Everything a block server needs to start. Times are in seconds."""

    model: str
    """Local checkpoint directory (or hub id where a hub is reachable)."""
    model_name: str
    """Name the model is announced under (clients ask for it)."""
    initial_peers: tuple[tuple[str, int], ...] = ()
    """DHT bootstrap peers; empty starts a new swarm."""
    blocks: BlockRange | None = None
    """Pinned block range; None lets the server choose (and rebalance)."""
    num_blocks: int | None = None
    """How many blocks to serve when choosing; None = as many as memory allows."""
    host: str = "127.0.0.1"
    """Interface the gRPC and DHT sockets bind to."""
    port: int = 0
    """gRPC port; 0 picks a free one."""
    dht_port: int = 0
    """DHT (UDP) port; 0 picks a free one."""
    public_address: str | None = None
    """host:port clients dial (e.g. a proxy or NAT mapping); default host:port."""
    torch_dtype: str = "auto"
    """auto (the checkpoint's), float32, bfloat16 or float16."""
    cache_tokens: int = 8192
    """KV-cache budget: tokens (batch rows x length) all open sessions may hold at once."""
    max_alloc_timeout: float = 10.0
    """How long a session that does not fit the cache budget waits for room."""
    session_idle_timeout: float = 300.0
    """An inference session with no message for this long is closed."""
    update_period: float = 30.0
    """Seconds between re-announcements of the server's record."""
    drain_grace: float = 30.0
    """On shutdown, how long open sessions may keep stepping."""
    identity_path: Path | None = None
    """Ed25519 key file; created on first run. None = a fresh identity each run."""
    max_batch_size: int = 64
    """Most rows a session or forward call may have."""
    max_session_length: int = 8192
    """Most tokens one session may hold per row."""
    tensor_limits: TensorLimits = field(default_factory=lambda: TensorLimits(max_bytes=256 << 20))
    """Bounds on tensors decoded from requests."""
    push_timeout: float = 5.0
    """Timeout of a push to the next server of a chained route."""
    dht_timeout: float = 10.0
    """Timeout of each DHT operation."""
    balance_period: float = 120.0
    """Mean seconds between rebalancing checks (each jittered by +-50%)."""
    balance_quality: float = 0.95
    """Move only if the swarm would become faster by more than 1/balance_quality."""
    metrics_port: int | None = None
    """Port of the Prometheus metrics endpoint; None: no endpoint."""
    throughput: float | None = None
    """Override for the measured inference throughput (tokens/s per block)."""
    scheduling: Scheduling = Scheduling.PRIORITY
    """Order of the compute thread's queue: inference steps first, or arrival order."""
    batch_share: float = DEFAULT_BATCH_SHARE
    """Least share of a busy compute thread that Forward/Backward work gets (priority scheduling)."""

    @property
    def record_ttl(self) -> float:
        """Records outlive a few missed announcements, then vanish."""
        return self.update_period * 3
