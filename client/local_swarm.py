"""A local swarm of real processes on one machine: a DHT bootstrap node and block servers.

    config = LocalSwarmConfig(model=path, spans=(BlockRange(0, 10), BlockRange(10, 20)))
    with LocalSwarm(config) as swarm:      # returns once every server is serving
        peers = swarm.initial_peers        # ["127.0.0.1:PORT"] for clients
    # every process is stopped here, also after an exception or Ctrl-C

Each process is `swarm-node` (run as `python -m node.cli` with this interpreter) and
logs to its own file in the work directory. Starting waits for the line with which a
process says it is ready ("DHT node listening on HOST:PORT", "serving blocks A:B of NAME
at HOST:PORT") and fails with the tail of the log if a process exits first or takes too
long. Stopping sends SIGTERM to each process group (servers first, so that they can
still tell the DHT they leave), then SIGKILL after a grace period. On Linux the children
also get a parent-death signal, so they go away even if the launcher is killed outright;
the work directory's `pids` file lists them for shell traps as a last resort.

What it does not do: choose blocks (the spans are given), restart crashed processes, or
start anything on another machine.

`python -m client.local_swarm --model default --blocks 0:10 10:20 20:30` runs a swarm
until Ctrl-C (or SIGTERM) and prints the DHT address clients should use.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from swarm.errors import SwarmError
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

DHT_READY = re.compile(r"DHT node listening on (\S+:\d+)")
SERVER_READY = re.compile(r"serving blocks (\d+:\d+) of (\S+) at (\S+:\d+)")
PIDS_FILENAME = "pids"
SHARED_CPU_ENV: dict[str, str] = {"GOMP_SPINCOUNT": "100000"}
"""Defaults for processes that share one machine's cores (the environment overrides them).
After each parallel op, torch's OpenMP threads spin-wait (GNU OpenMP: ~300k spins by
default, forever with OMP_WAIT_POLICY=ACTIVE) and so steal the cores that the next
server in the chain needs. Measured with three SmolLM2 servers on 2 cores, per decoded
token: default spinning 0.5-1.9 s, OMP_WAIT_POLICY=PASSIVE 56-73 ms (sleeping threads
slow each server's own compute by ~20%), GOMP_SPINCOUNT=100000 46-67 ms (local run of
the whole model in one process: 35-45 ms)."""


def shared_cpu_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A child's environment: SHARED_CPU_ENV unless this environment overrides it, then `extra`."""
    return {**SHARED_CPU_ENV, **os.environ, **extra}


_PR_SET_PDEATHSIG = 1


class LocalSwarmError(SwarmError):
    """A process of the local swarm failed to start (its log tail is in the message)."""


@dataclass(frozen=True)
class LocalSwarmConfig:
    """What to start."""

    model: str
    """Checkpoint directory (or hub id) every server loads."""
    spans: tuple[BlockRange, ...]
    """One server per span, in this order."""
    host: str = "127.0.0.1"
    """Interface every process binds (ports are chosen by the OS)."""
    workdir: Path | None = None
    """Where logs and the pids file go (None: a new temporary directory)."""
    server_args: tuple[str, ...] = ()
    """Extra `swarm-node start` arguments for every server (e.g. "--throughput", "100")."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables set for every process, on top of this process's own."""
    start_timeout: float = 300.0
    """Seconds the whole start may take (servers load their blocks in parallel)."""
    stop_timeout: float = 20.0
    """Seconds processes get after SIGTERM before SIGKILL."""


@dataclass
class NodeProcess:
    """One started `swarm-node` process and its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    address: str = ""
    """HOST:PORT it listens on, once ready."""
    started_at: float = field(default_factory=time.monotonic)
    ready_after: float | None = None
    """Seconds from spawn to its ready line."""
    _offset: int = 0
    _seen: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def poll_ready(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        """Reads what the log gained since the last call; the ready line's match, if any."""
        with self.log.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        self._offset += len(chunk)
        # keep an unfinished last line for the next call
        self._seen = (self._seen + chunk.decode(errors="replace"))[-4096:]
        return pattern.search(self._seen)

    def peak_rss_bytes(self) -> int:
        """The process's peak resident set size so far (Linux: VmHWM), in bytes."""
        return read_peak_rss(self.pid)


def read_peak_rss(pid: int) -> int:
    """VmHWM of a live process from /proc, in bytes (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LocalSwarmError(f"no VmHWM in /proc/{pid}/status")


def _child_log_level() -> str:
    """INFO at least: readiness is read from INFO lines."""
    level = os.environ.get("SWARM_LOG_LEVEL", "INFO").upper()
    return level if level in ("DEBUG", "INFO") else "INFO"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalSwarm(contextlib.AbstractContextManager["LocalSwarm"]):
    """Starts a DHT bootstrap node and one server per span; stops them all."""

    def __init__(self, config: LocalSwarmConfig,
                 on_ready: Callable[[NodeProcess], None] | None = None) -> None:
        self.config = config
        self.on_ready = on_ready
        """Called as each process becomes ready (progress reporting)."""
        self.workdir = Path(config.workdir or tempfile.mkdtemp(prefix="swarm-local-"))
        self.dht: NodeProcess | None = None
        self.servers: list[NodeProcess] = []

    @property
    def processes(self) -> list[NodeProcess]:
        return [*self.servers, *([self.dht] if self.dht else [])]

    @property
    def initial_peers(self) -> list[str]:
        if self.dht is None or not self.dht.address:
            raise LocalSwarmError("the local swarm is not started")
        return [self.dht.address]

    def __enter__(self) -> LocalSwarm:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Starts everything and waits until every server serves; stops all on failure."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.config.start_timeout
        try:
            self.dht = self._spawn("dht", ["dht", "--host", self.config.host, "--port", "0"])
            self._wait_ready(self.dht, DHT_READY, deadline)
            for span in self.config.spans:
                self.servers.append(self._spawn(f"server-{span.start}-{span.end}", [
                    "start", "--model", self.config.model, "--blocks", str(span),
                    "--initial-peers", self.dht.address, "--host", self.config.host,
                    *self.config.server_args,
                ]))
            self._wait_servers(deadline)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: Sequence[str]) -> NodeProcess:
        log = self.workdir / f"{name}.log"
        env = shared_cpu_env({"PYTHONUNBUFFERED": "1", "SWARM_LOG_LEVEL": _child_log_level(), **self.config.env})
        with log.open("wb") as handle:
            popen = subprocess.Popen(
                [sys.executable, "-m", "node.cli", *args], stdout=handle, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        process = NodeProcess(name, popen, log)
        with (self.workdir / PIDS_FILENAME).open("a") as pids:
            pids.write(f"{popen.pid} {name}\n")
        logger.debug("started %s (pid %d), log %s", name, popen.pid, log)
        return process

    def _wait_ready(self, process: NodeProcess, pattern: re.Pattern[str], deadline: float) -> re.Match[str]:
        while True:
            match = self._check(process, pattern)
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise LocalSwarmError(f"{process.name} was not ready in {self.config.start_timeout:g} s; "
                                      f"log {process.log}:\n{process.log_tail()}")
            time.sleep(0.05)

    def _wait_servers(self, deadline: float) -> None:
        waiting = list(self.servers)
        while waiting:
            for server in list(waiting):
                if self._check(server, SERVER_READY) is not None:
                    waiting.remove(server)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise LocalSwarmError(f"{names} not serving after {self.config.start_timeout:g} s; "
                                      f"log {waiting[0].log}:\n{waiting[0].log_tail()}")
            time.sleep(0.05)

    def _check(self, process: NodeProcess, pattern: re.Pattern[str]) -> re.Match[str] | None:
        match = process.poll_ready(pattern)
        if match is None:
            if not process.alive:
                raise LocalSwarmError(f"{process.name} exited with status {process.popen.returncode}; "
                                      f"log {process.log}:\n{process.log_tail()}")
            return None
        process.ready_after = time.monotonic() - process.started_at
        process.address = match.group(match.lastindex or 0)  # the last group of either pattern
        logger.info("%s ready at %s after %.1f s", process.name, process.address, process.ready_after)
        if self.on_ready is not None:
            self.on_ready(process)
        return match

    def stop(self) -> None:
        """SIGTERM to the servers, then the DHT node; SIGKILL whatever outlives the grace."""
        _terminate(self.servers, self.config.stop_timeout)
        _terminate([self.dht] if self.dht else [], self.config.stop_timeout)


def _signal_group(process: NodeProcess, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # start_new_session: its group id is its pid


def _terminate(processes: Sequence[NodeProcess], grace: float) -> None:
    alive = [p for p in processes if p.alive]
    for process in alive:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in alive:
        try:
            process.popen.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", process.name,
                           process.pid, grace)
    for process in alive:
        _signal_group(process, signal.SIGKILL)  # also reaps leftovers of the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(5)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (and SIGHUP) raise KeyboardInterrupt like Ctrl-C does."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Runs a local swarm until interrupted; prints the DHT address on stdout."""
    from swarm.default_model import resolve_model
    from swarm.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m client.local_swarm", description=main.__doc__)
    parser.add_argument("--model", default="default", help="checkpoint dir, hub id or 'default'")
    parser.add_argument("--blocks", nargs="+", type=BlockRange.parse, default=None, metavar="A:B",
                        help="one server per range (default 0:10 10:20 20:30)")
    parser.add_argument("--workdir", type=Path, help="logs and pids file (default: a temp dir)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every server (repeat; e.g. --server-arg=--throughput)")
    args = parser.parse_args(argv)
    setup_logging()
    spans = tuple(args.blocks or (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30)))
    config = LocalSwarmConfig(resolve_model(args.model), spans, workdir=args.workdir,
                              server_args=tuple(args.server_arg))
    swarm = LocalSwarm(config)
    try:
        with sigterm_as_interrupt(), swarm:
            print(f"initial peers: {swarm.initial_peers[0]} (logs in {swarm.workdir})", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        logger.info("stopped")
    except LocalSwarmError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
