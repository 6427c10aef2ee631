"""Every environment variable the runtime packages (swarm, node, client) read, read here.

    SWARM_LOG_LEVEL   level of the root logger set up by the CLIs (DEBUG, INFO, WARNING,
                      ...); unset: the command's default (INFO for swarm-node, WARNING
                      for the user's `swarm` commands), or DEBUG with --verbose
                      (`swarm.logs`)
    SWARM_LLM_CACHE   root of swarm-llm's cache: the converted default model
                      (`swarm.default_model`) and measured throughputs
                      (`node.throughput`); unset: ~/.cache/swarm-llm
    SWARM_TOKEN       the private swarm's token when --swarm-token is not given
                      (`swarm.security`); unset or empty: none (a public swarm)
    SWARM_INITIAL_PEERS  DHT peers (HOST:PORT, separated by spaces or commas) a client
                      joins when none are given (`client.model`: from_pretrained
                      without initial_peers)
    MALLOC_ARENA_MAX  glibc's own; when set, `swarm-node` leaves the arena count it
                      chose alone (else the node caps it at one, `node.heap`)
    GRPC_EXPERIMENTS  gRPC's own; when set, left alone; unset, importing swarm sets it
                      to POLLER_IO before gRPC loads (`choose_grpc_io`)

Each function reads the environment when called (tests and launchers set variables
after import). Not here: command-line flags (`swarm.config_flags` builds them from the
config dataclasses) and variables that dev tools under client/bench or scripts/ read
for themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from importlib import metadata
from pathlib import Path

LOG_LEVEL_ENV = "SWARM_LOG_LEVEL"
CACHE_ENV = "SWARM_LLM_CACHE"
TOKEN_ENV = "SWARM_TOKEN"
INITIAL_PEERS_ENV = "SWARM_INITIAL_PEERS"
MALLOC_ARENA_ENV = "MALLOC_ARENA_MAX"
GRPC_EXPERIMENTS_ENV = "GRPC_EXPERIMENTS"

POLLER_IO = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
"""gRPC's experiments that swarm turns off: its EventEngine's sockets (grpcio 1.80 made them
the default for Python). With them, a message read on a socket is handed from the
engine's poller thread to a worker thread, then to grpc.aio's completion-queue thread,
then to the event loop; with iomgr's poller (gRPC's I/O for Python until 1.80) the
completion-queue thread reads the socket itself. On this project's 2-core test machine
that cut a loopback round trip of a 2 KB message from ~780 to ~615 us, and in a paired
run of two local swarms of SmolLM2 the messaging per server from 1.22 to 0.91 ms (the
three servers' CPU per token 43.3 -> 42.5 ms)."""
POLLER_IO_GRPC_VERSIONS = ("1.85.",)
"""grpcio releases measured with POLLER_IO (it names experiments that later releases drop:
an unknown name costs an error line in every process, so a new pin is measured first)."""


def log_level(verbose: bool = False, default: str = "INFO") -> str:
    """The root logger's level name: $SWARM_LOG_LEVEL, else DEBUG if verbose, else `default`."""
    return os.environ.get(LOG_LEVEL_ENV) or ("DEBUG" if verbose else default)


def cache_root() -> Path:
    """Root of swarm-llm's cache: $SWARM_LLM_CACHE, else ~/.cache/swarm-llm."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "swarm-llm"


def swarm_token() -> str | None:
    """The swarm token from $SWARM_TOKEN; None when unset or empty."""
    return os.environ.get(TOKEN_ENV) or None


def initial_peers() -> tuple[str, ...]:
    """HOST:PORT texts from $SWARM_INITIAL_PEERS (spaces or commas between); () when unset."""
    text = os.environ.get(INITIAL_PEERS_ENV, "")
    return tuple(part for part in text.replace(",", " ").split() if part)


def malloc_arenas_chosen() -> bool:
    """Whether $MALLOC_ARENA_MAX is set (glibc applied it at start: the operator chose)."""
    return MALLOC_ARENA_ENV in os.environ


def choose_grpc_io(environ: MutableMapping[str, str] | None = None, grpc_loaded: bool | None = None,
                   grpc_version: str | None = None) -> bool:
    """Sets $GRPC_EXPERIMENTS to POLLER_IO; True if it did.

    Leaves it alone when the environment names experiments itself (the operator's word
    wins), when gRPC is loaded already (it read the variable then: setting it now would
    only mislead child processes about this one) or when this grpcio is not one
    POLLER_IO was measured on. Called when the swarm package loads, which node and
    client import first. Processes started later inherit the variable. The arguments
    stand in for the process's own (tests)."""
    environ = os.environ if environ is None else environ
    if GRPC_EXPERIMENTS_ENV in environ:
        return False
    if grpc_loaded if grpc_loaded is not None else "grpc" in sys.modules:
        return False
    if grpc_version is None:
        try:
            grpc_version = metadata.version("grpcio")
        except metadata.PackageNotFoundError:
            return False
    if not grpc_version.startswith(POLLER_IO_GRPC_VERSIONS):
        return False
    environ[GRPC_EXPERIMENTS_ENV] = POLLER_IO
    return True
