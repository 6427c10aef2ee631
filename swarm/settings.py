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

Each function reads the environment when called (tests and launchers set variables
after import). Not here: command-line flags (`swarm.config_flags` builds them from the
config dataclasses) and variables that dev tools under client/bench or scripts/ read
for themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

LOG_LEVEL_ENV = "SWARM_LOG_LEVEL"
CACHE_ENV = "SWARM_LLM_CACHE"
TOKEN_ENV = "SWARM_TOKEN"
INITIAL_PEERS_ENV = "SWARM_INITIAL_PEERS"
MALLOC_ARENA_ENV = "MALLOC_ARENA_MAX"


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
