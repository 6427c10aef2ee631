"""The block server's and the DHT node's configuration: frozen data the CLI fills.

Each field that is a command-line flag says so in its metadata (`swarm.config_flags`):
its help, and its default, live here once; `node.start_command` and `node.dht_command`
make their flags from these classes. Not here: the DHT's protocol settings
(`swarm.dht.DhtConfig`) and environment variables (`swarm.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from node.scheduler import DEFAULT_BATCH_SHARE, Scheduling
from swarm import settings
from swarm.addresses import PeerAddress
from swarm.codec.limits import TensorLimits
from swarm.config_flags import flag
from swarm.model.options import QUANTIZATIONS, parse_device
from swarm.records import BlockRange
from swarm.security import RpcSecurity

_PEERS_HELP = "DHT peers to join (none: start a new swarm)"
_IDENTITY_HELP = "key file of this node's identity (created if missing), so a restart keeps its id"
_READY_HELP = ("write a JSON line of facts (pid, addresses, ...) to this file, atomically, once ready "
               "(for launchers and tests)")


def parse_num_blocks(text: str) -> int | None:
    """N > 0, or "auto" (None: as many as memory allows)."""
    if text == "auto":
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"--num-blocks must be >= 1 or auto, got {text}")
    return value


def parse_batch_share(text: str) -> float:
    """A share in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"--batch-share must be in [0, 1), got {text}")
    return value


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter to serve: `NAME=DIR` on the command line (DIR in PEFT's format)."""

    name: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> AdapterSpec:
        from swarm.codec.bodies import check_adapter_name
        from swarm.errors import RecordRejected

        name, sep, path = text.partition("=")
        if not sep or not path:
            raise ValueError(f"--adapter takes NAME=DIR, got {text!r}")
        try:
            check_adapter_name(name)
        except RecordRejected as error:
            raise ValueError(str(error)) from None
        return cls(name, Path(path))


@dataclass(frozen=True)
class ServerConfig:
    """Everything a block server needs to start. Times are in seconds."""

    model: str
    """Local checkpoint directory (or hub id where a hub is reachable)."""
    model_name: str
    """Name the model is announced under (clients ask for it)."""
    initial_peers: tuple[PeerAddress, ...] = field(
        default=(), metadata=flag(_PEERS_HELP, metavar="HOST:PORT"))
    """DHT bootstrap peers; empty starts a new swarm."""
    num_blocks: int | None = field(default=None, metadata=flag(
        "serve this many blocks where the swarm needs them; 'auto': as many as memory allows, "
        "leaving room for the KV cache", metavar="N|auto", parse=parse_num_blocks, default_text="auto",
        group="blocks"))
    """How many blocks to serve when choosing; None = as many as memory allows."""
    blocks: BlockRange | None = field(default=None, metadata=flag(
        "serve exactly blocks A..B-1", metavar="A:B", group="blocks"))
    """Pinned block range; None lets the server choose (and rebalance)."""
    host: str = field(default="127.0.0.1", metadata=flag("interface to bind"))
    """Interface the gRPC and DHT sockets bind to."""
    port: int = field(default=0, metadata=flag("gRPC port", default_text="any free port"))
    """gRPC port; 0 picks a free one."""
    dht_port: int = field(default=0, metadata=flag("DHT UDP port", default_text="any free port"))
    """DHT (UDP) port; 0 picks a free one."""
    public_address: str | None = field(default=None, metadata=flag(
        "address clients should dial (a proxy or NAT mapping)", metavar="HOST:PORT", default_text="HOST:PORT"))
    """host:port clients dial (e.g. a proxy or NAT mapping); default host:port."""
    torch_dtype: str = field(default="auto", metadata=flag(
        "compute dtype; auto: the checkpoint's (on a GPU: bfloat16 where supported, else float16)", choices=("auto", "float32", "bfloat16", "float16")))
    """auto (the checkpoint's; on a GPU a 16-bit one, see `swarm.model.device`), float32, bfloat16
    or float16."""
    device: str = field(default="cpu", metadata=flag(
        "where blocks and KV caches live: cpu, cuda, cuda:N, or auto (cuda when present)",
        metavar="cpu|cuda|cuda:N|auto", parse=parse_device))
    """Torch device of the served blocks, their KV caches and the throughput probe."""
    quantization: str = field(default="none", metadata=flag(
        "quantize the served blocks' projections at load: int8 (LLM.int8) or nf4 (4-bit NormalFloat); "
        "needs bitsandbytes", choices=QUANTIZATIONS))
    """none, int8 or nf4 (`swarm.model.quantize`); announced in the server's record."""
    cache_tokens: int = field(default=8192, metadata=flag("KV-cache budget in tokens, all sessions together"))
    """KV-cache budget: tokens (batch rows x length) all open sessions may hold at once."""
    max_alloc_timeout: float = field(default=10.0, metadata=flag(
        "seconds a session waits for cache room before RESOURCE_EXHAUSTED"))
    """How long a session that does not fit the cache budget waits for room."""
    session_idle_timeout: float = field(default=300.0, metadata=flag("close sessions idle this many seconds"))
    """An inference session with no message for this long is closed."""
    update_period: float = field(default=30.0, metadata=flag("seconds between DHT announcements"))
    """Seconds between re-announcements of the server's record."""
    drain_grace: float = field(default=30.0, metadata=flag("on shutdown, seconds open sessions may finish"))
    """On shutdown, how long open sessions may keep stepping."""
    push_timeout: float = field(default=5.0, metadata=flag(
        "seconds a push to the next server of a chained route may take"))
    """Timeout of a push to the next server of a chained route (`swarm.write_watch`: a push
    stuck that long fails within another quarter of it)."""
    balance_period: float = field(default=120.0, metadata=flag(
        "mean seconds between rebalancing checks, jittered +-50%%"))
    """Mean seconds between rebalancing checks (each jittered by +-50%)."""
    balance_quality: float = field(default=0.95, metadata=flag(
        "move only when the swarm gets faster by more than 1/Q (0 < Q <= 1; lower it for models that "
        "load slowly)", metavar="Q"))
    """Move only if the swarm would become faster by more than 1/balance_quality."""
    throughput: float | None = field(default=None, metadata=flag(
        "tokens/s per block to announce instead of measuring"))
    """Override for the measured inference throughput (tokens/s per block)."""
    metrics_port: int | None = field(default=None, metadata=flag(
        "serve Prometheus metrics on this port of --host", default_text="off"))
    """Port of the Prometheus metrics endpoint; None: no endpoint."""
    identity_path: Path | None = field(default=None, metadata=flag(_IDENTITY_HELP, name="identity", metavar="FILE"))
    """Ed25519 key file; created on first run. None = a fresh identity each run."""
    tls_cert: Path | None = field(default=None, metadata=flag(
        "serve gRPC over TLS with this certificate chain (PEM; with --tls-key)", metavar="FILE"))
    """Certificate chain served over TLS; None: plaintext gRPC (a public swarm)."""
    tls_key: Path | None = field(default=None, metadata=flag("private key of --tls-cert (PEM)", metavar="FILE"))
    """Private key of `tls_cert`."""
    tls_ca: Path | None = field(default=None, metadata=flag(
        "CA certificate(s) (PEM) this server verifies the servers it pushes to and probes against "
        "(needed when they serve TLS)", metavar="FILE"))
    """CA for this server's own outgoing calls; None: it dials peers in plaintext."""
    swarm_token: str | None = field(default=None, repr=False, metadata=flag(
        "shared secret of a private swarm: every call to this server and every DHT message must carry it",
        metavar="TOKEN", default_text="$SWARM_TOKEN, else none"))
    """Token of a private swarm; None: $SWARM_TOKEN, else a public swarm (see `swarm.security`)."""
    scheduling: Scheduling = field(default=Scheduling.PRIORITY, metadata=flag(
        "compute queue order: priority (inference steps before Forward/Backward passes, which run a "
        "block at a time) or fifo (arrival order, a whole pass at once; for comparison)"))
    """Order of the compute thread's queue: inference steps first, or arrival order."""
    batch_share: float = field(default=DEFAULT_BATCH_SHARE, metadata=flag(
        "least share of a busy compute thread for Forward/Backward work under priority scheduling, "
        "0 <= S < 1 (0: only when no step waits)", metavar="S", parse=parse_batch_share))
    """Least share of a busy compute thread that Forward/Backward work gets (priority scheduling)."""
    ready_file: Path | None = field(default=None, metadata=flag(_READY_HELP, metavar="PATH"))
    """Where to write the server's facts once it serves (and again after each move)."""
    max_peer_cache_share: float = field(default=0.5, metadata=flag(
        "share of the KV-cache budget guaranteed to each client address, 0 < S <= 1: an address may "
        "use more while nobody else needs it, and gives the surplus back when someone does",
        metavar="S"))
    """Share of the KV-cache budget guaranteed to one client address (IP); beyond it is borrowed."""
    evict_idle_after: float = field(default=5.0, metadata=flag(
        "while an open waits for cache room, close sessions idle this many seconds to make room"))
    """Under cache contention, sessions idle this long are closed for a waiting open."""
    max_inflight_bytes: int = field(default=1 << 30, metadata=flag(
        "most Forward/Backward request bytes this server holds at once, all clients together"))
    """Cap on declared request bytes being received or worked on, server-wide."""
    max_peer_inflight_bytes: int = field(default=384 << 20, metadata=flag(
        "most Forward/Backward request bytes one client address may have in flight"))
    """Cap on declared request bytes in flight from one client address (IP)."""
    adapters: tuple[AdapterSpec, ...] = field(default=(), metadata=flag(
        "serve PEFT LoRA adapter directories, each under its NAME; clients ask for one by name and "
        "the server's record lists them", name="adapter", metavar="NAME=DIR"))
    """LoRA adapters served next to the blocks."""
    max_tuning_bytes: int = field(default=256 << 20, metadata=flag(
        "most bytes of deep prompts and LoRA factors that open sessions may hold, all clients together "
        "(one client address: half); a quarter more keeps recent passes' tensors for their Backward calls"))
    """Budget of the tuning tensors sessions hold for their lifetime (and, a quarter of it, the
    cache of recent passes' tensors by digest)."""
    max_graph_bytes: int = field(default=1 << 30, metadata=flag(
        "most bytes of training passes' autograd graphs kept from a Forward to its Backward (which "
        "then need not recompute the forward); the oldest go first, but half is safe from other client "
        "addresses; a Backward without one recomputes"))
    """Budget of `node.graph_cache` (activations saved by autograd, weights excluded)."""
    max_batch_size: int = 64
    """Most rows a session or forward call may have."""
    max_session_length: int = 8192
    """Most tokens one session may hold per row."""
    tensor_limits: TensorLimits = field(default_factory=lambda: TensorLimits(max_bytes=256 << 20))
    """Bounds on tensors decoded from requests."""
    dht_timeout: float = 10.0
    """Timeout of each DHT operation."""

    def load_security(self) -> RpcSecurity:
        """The TLS files read and checked, with the token (else $SWARM_TOKEN); `SecurityConfigError`
        if unusable."""
        return RpcSecurity.load(tls_ca=self.tls_ca, tls_cert=self.tls_cert, tls_key=self.tls_key,
                                swarm_token=self.swarm_token or settings.swarm_token())

    @property
    def record_ttl(self) -> float:
        """Records outlive a few missed announcements, then vanish."""
        return self.update_period * 3


@dataclass(frozen=True)
class DhtNodeConfig:
    """A DHT-only node (`swarm-node dht`): a bootstrap point that serves no blocks."""

    port: int = field(metadata=flag("UDP port to listen on (0: any free port)"))
    """UDP port; 0 picks a free one."""
    host: str = field(default="0.0.0.0", metadata=flag("address to bind", default_text="all interfaces"))
    """Interface the socket binds to."""
    initial_peers: tuple[PeerAddress, ...] = field(default=(), metadata=flag(
        "DHT nodes to join through (none: start a new swarm)", metavar="HOST:PORT"))
    """DHT nodes to join through; empty starts a new swarm."""
    identity_path: Path | None = field(default=None, metadata=flag(
        "key file (created if missing) fixing the node id", name="identity", metavar="FILE"))
    """Ed25519 key file the node id derives from; None: a random id each run."""
    swarm_token: str | None = field(default=None, repr=False, metadata=flag(
        "shared secret of a private swarm: DHT messages without it are dropped",
        metavar="TOKEN", default_text="$SWARM_TOKEN, else none"))
    """Token of a private swarm; None: $SWARM_TOKEN, else a public swarm."""
    ready_file: Path | None = field(default=None, metadata=flag(_READY_HELP, metavar="PATH"))
    """Where to write the node's facts once it is bound and has joined."""
