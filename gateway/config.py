"""The gateway's configuration: frozen data, filled by `swarm serve`'s flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from swarm.config_flags import flag


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a positive number, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a port 0..65535, got {text}")
    return value


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and how much it takes on."""

    host: str = field(default="127.0.0.1", metadata=flag("interface to listen on (0.0.0.0: all)"))
    """Interface for both the HTTP and the gRPC listener."""
    port: int = field(default=8000, metadata=flag("HTTP port (OpenAI API, web page, /metrics); 0: any free port",
                                                  parse=_port))
    """HTTP port."""
    grpc_port: int = field(default=8001, metadata=flag("gRPC port (swarm.v1.TextGeneration); 0: any free port",
                                                       parse=_port))
    """gRPC port."""
    max_concurrent: int = field(default=8, metadata=flag(
        "generations run at once; more requests wait their turn", parse=_positive_int, metavar="N"))
    """Generation threads: each holds one inference session on the swarm."""
    max_tokens_limit: int = field(default=2048, metadata=flag(
        "largest max_tokens a request may ask for", parse=_positive_int, metavar="N"))
    """Bounds one request's work (and its KV-cache reservation on the servers)."""
    default_max_tokens: int = 256
    """max_tokens of a request that does not say (OpenAI's legacy completions default, 16,
    cuts answers mid-sentence)."""
    update_period: float = field(default=2.0, metadata=flag(
        "seconds between the web page's refreshes of the swarm map", metavar="S", parse=_positive_float))
    """How often the page polls /api/v1/swarm; the map is cached for a quarter of it."""
    ping_timeout: float = 1.0
    """Health ping of one server for /api/v1/swarm: a server that does not answer within it is
    shown unreachable."""
    ready_file: Path | None = field(default=None, metadata=flag(
        "write {\"http\": HOST:PORT, \"grpc\": HOST:PORT} here once serving (for scripts and tests)",
        metavar="FILE"))
    """Where the bound addresses are written once both listeners serve."""
    grace: float = 5.0
    """Seconds in-flight requests get to finish on SIGTERM."""
