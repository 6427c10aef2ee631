"""A local swarm of real processes on one machine: a DHT bootstrap node and block servers.

    config = LocalSwarmConfig(model=path, spans=(BlockRange(0, 10), BlockRange(10, 20)))
    with LocalSwarm(config) as swarm:      # returns once every server is serving
        peers = swarm.initial_peers        # ["127.0.0.1:PORT"] for clients
    # every process is stopped here, also after an exception or Ctrl-C

Tests that start processes one by one use the same class step by step:

    swarm = LocalSwarm(LocalSwarmConfig.for_tests(tmp_path))
    peer = swarm.start_dht().address
    server = swarm.start_server("s0", model_dir, [peer], "--num-blocks", "2")
    ...
    swarm.stop_all()

Each process is `swarm-node` (process.py) logging to its own file in the work
directory; it is ready when its ready file says so. Stopping sends SIGTERM to each
process group (servers first, so that they can still tell the DHT they leave), then
SIGKILL after a grace period. On Linux the children also get a parent-death signal, so
they go away even if the launcher is killed outright; the work directory's `pids` file
lists them for shell traps as a last resort.

What it does not do: choose blocks (the spans are given), restart crashed processes, or
start anything on another machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from devtools.launcher.process import NodeProcess, shared_cpu_env, spawn_node, terminate, wait_ready
from devtools.launcher.ready import LocalSwarmError
from swarm.records import BlockRange

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalSwarmConfig:
    """What to start."""

    model: str = ""
    """Checkpoint directory (or hub id) every server of `spans` loads."""
    spans: tuple[BlockRange, ...] = ()
    """One server per span, in this order, started by `start()` (tests may start none)."""
    host: str = "127.0.0.1"
    """Interface every process binds (ports are chosen by the OS unless server_args say)."""
    workdir: Path | None = None
    """Where logs, ready files and the pids file go (None: a new temporary directory)."""
    server_args: tuple[str, ...] = ()
    """Extra `swarm-node start` arguments for every server (e.g. "--throughput", "100")."""
    per_server_args: tuple[tuple[str, ...], ...] = ()
    """Extra arguments for the server of spans[i] only (e.g. its --port and --public-address)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables set for every process, on top of this process's own."""
    start_timeout: float = 300.0
    """Seconds the whole start may take (servers load their blocks in parallel)."""
    stop_timeout: float = 20.0
    """Seconds processes get after SIGTERM before SIGKILL."""

    @classmethod
    def for_tests(cls, workdir: Path) -> LocalSwarmConfig:
        """Processes for a test started one by one: one OpenMP thread each (tests share
        2 cores) and the swarm-llm cache in `workdir` unless SWARM_LLM_CACHE says where."""
        cache = os.environ.get("SWARM_LLM_CACHE") or str(workdir / "cache")
        return cls(workdir=workdir, env={"OMP_NUM_THREADS": "1", "SWARM_LLM_CACHE": cache})


def _child_log_level() -> str:
    """INFO at least: tests check what nodes say, and a person reads the logs after a failure."""
    level = os.environ.get("SWARM_LOG_LEVEL", "INFO").upper()
    return level if level in ("DEBUG", "INFO") else "INFO"


class LocalSwarm(contextlib.AbstractContextManager["LocalSwarm"]):
    """Starts a DHT bootstrap node and servers, all in one work directory; stops them all."""

    def __init__(self, config: LocalSwarmConfig,
                 on_ready: Callable[[NodeProcess], None] | None = None) -> None:
        self.config = config
        self.on_ready = on_ready
        """Called as each process becomes ready (progress reporting)."""
        self.workdir = Path(config.workdir or tempfile.mkdtemp(prefix="swarm-local-"))
        self.dht: NodeProcess | None = None
        self.servers: list[NodeProcess] = []
        self._env = shared_cpu_env({"PYTHONUNBUFFERED": "1", "SWARM_LOG_LEVEL": _child_log_level(),
                                    **config.env})

    @property
    def processes(self) -> list[NodeProcess]:
        return [*self.servers, *([self.dht] if self.dht else [])]

    @property
    def initial_peers(self) -> list[str]:
        if self.dht is None or not self.dht.address:
            raise LocalSwarmError("the local swarm's DHT node is not started")
        return [self.dht.address]

    def __enter__(self) -> LocalSwarm:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Starts the DHT node and a server per span; returns once every server serves, or
        stops everything and raises LocalSwarmError."""
        try:
            self.start_dht(timeout=self.config.start_timeout)
            extra = self.config.per_server_args or tuple(() for _ in self.config.spans)
            if len(extra) != len(self.config.spans):
                raise LocalSwarmError(f"{len(extra)} per_server_args for {len(self.config.spans)} spans")
            servers = [self.spawn_server(f"server-{span.start}-{span.end}", self.config.model,
                                         self.initial_peers, "--blocks", str(span), *args)
                       for span, args in zip(self.config.spans, extra)]
            wait_ready(servers, self.config.start_timeout, self.on_ready)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str]) -> NodeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return spawn_node(self.workdir, name, args, self._env)

    def start_dht(self, name: str = "dht", timeout: float = 30.0) -> NodeProcess:
        """Starts the bootstrap DHT node (`initial_peers`) and waits until it listens."""
        self.dht = self._spawn(name, ["dht", "--host", self.config.host, "--port", "0"])
        wait_ready([self.dht], timeout, self.on_ready)
        return self.dht

    def spawn_server(self, name: str, model: Path | str, peers: list[str], *extra: str) -> NodeProcess:
        """Starts `swarm-node start` (with `server_args` and `extra`) without waiting for it."""
        server = self._spawn(name, ["start", "--model", str(model), "--initial-peers", *peers,
                                    "--host", self.config.host, *self.config.server_args, *extra])
        self.servers.append(server)
        return server

    def start_server(self, name: str, model: Path | str, peers: list[str], *extra: str,
                     timeout: float = 120.0) -> NodeProcess:
        """`spawn_server`, then waits until it serves."""
        return self.wait_serving(self.spawn_server(name, model, peers, *extra), timeout)

    def wait_serving(self, server: NodeProcess, timeout: float = 120.0) -> NodeProcess:
        """Waits until `server` has written its ready file; LocalSwarmError if it exits first."""
        wait_ready([server], timeout, self.on_ready)
        return server

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to the servers, then the DHT node; SIGKILL whatever outlives the grace
        (default: config.stop_timeout; 0 kills at once)."""
        grace = self.config.stop_timeout if grace is None else grace
        terminate(self.servers, grace)
        terminate([self.dht] if self.dht else [], grace)

    def stop_all(self) -> None:
        """Kills every process now: for tests, which have nothing to drain."""
        self.stop(grace=0.0)
