"""One `swarm-node` child process: spawn it, learn when it is ready, stop it.

A child runs as `python -m node.cli ARGS --ready-file DIR/NAME.ready.json` with this
interpreter, logs to DIR/NAME.log, and is ready once its ready file (ready.py) names
its own pid. Waiting polls that file with a deadline and fails fast, with the log tail,
if the child exits first. The log stays readable for tests that check what a node
says (`text`, `wait_for`); addresses never come from it.

What it does not do: decide what to start (swarm.py does), restart a crashed child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.launcher.ready import LocalSwarmError, NodeReady, read_ready

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.05
"""Seconds between looks at a ready file or log: short next to a node's start (seconds)."""
PIDS_FILENAME = "pids"
"""In the work directory: "PID NAME" per started child, for shell traps as a last resort."""
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


def listed_pids(workdir: Path) -> list[int]:
    """The pids of every child started in `workdir` so far (its pids file; [] without one)."""
    try:
        lines = (workdir / PIDS_FILENAME).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [int(line.split()[0]) for line in lines if line.strip()]


def read_peak_rss(pid: int) -> int:
    """VmHWM of a live process from /proc, in bytes (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LocalSwarmError(f"no VmHWM in /proc/{pid}/status")


@dataclass
class NodeProcess:
    """One started `swarm-node` process, its log and its ready file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ready_file: Path
    info: NodeReady | None = None
    """The ready file as last read; None until the process is ready."""
    started_at: float = field(default_factory=time.monotonic)
    ready_after: float | None = None
    """Seconds from spawn to its ready file."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def address(self) -> str:
        """Where others reach it (a server's gRPC, a DHT node's UDP address); "" until ready."""
        return self.info.address if self.info else ""

    def text(self) -> str:
        """The whole log so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.text()[-chars:]

    def ready(self) -> NodeReady | None:
        """Rereads the ready file (a server rewrites it when its blocks or state change);
        None while there is none from this very process."""
        info = read_ready(self.ready_file)
        if info is None or info.pid != self.pid:
            return None
        self.info = info
        return info

    def check_ready(self) -> bool:
        """Whether it is ready now; LocalSwarmError with the log tail if it has exited."""
        if self.ready() is not None:
            if self.ready_after is None:
                self.ready_after = time.monotonic() - self.started_at
            return True
        if not self.alive:
            raise LocalSwarmError(f"{self.name} exited with status {self.popen.returncode}; "
                                  f"log {self.log}:\n{self.log_tail()}")
        return False

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of `pattern` in the log, polled until `timeout` seconds (for tests
        that check what a node says; readiness comes from the ready file)."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.text())) is None:
            if not self.alive:
                raise LocalSwarmError(f"{self.name} exited with status {self.popen.returncode} before "
                                      f"logging {pattern!r}; log {self.log}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise LocalSwarmError(f"{self.name} did not log {pattern!r} in {timeout:g} s; "
                                      f"log {self.log}:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)
        return match

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Sends `sig` (SIGKILL after `timeout` s if it still runs); its exit status."""
        if self.alive:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def peak_rss_bytes(self) -> int:
        """The process's peak resident set size so far (Linux: VmHWM), in bytes."""
        return read_peak_rss(self.pid)


PARENT_GUARD = Path(__file__).with_name("parent_guard.py")
"""Ends a child when its launcher dies, without Python code between fork and exec."""


def spawn_node(workdir: Path, name: str, args: Sequence[str], env: Mapping[str, str]) -> NodeProcess:
    """Starts `swarm-node ARGS --ready-file ...` in its own session, logging to workdir/NAME.log."""
    log = workdir / f"{name}.log"
    ready_file = workdir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)  # a name reused in one workdir must not look ready at once
    with log.open("wb") as handle:
        popen = subprocess.Popen(
            [sys.executable, str(PARENT_GUARD), str(os.getpid()),
             sys.executable, "-m", "node.cli", *args, "--ready-file", str(ready_file)],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
            start_new_session=True,  # its own process group: stopping it stops what it spawned
        )
    with (workdir / PIDS_FILENAME).open("a") as pids:
        pids.write(f"{popen.pid} {name}\n")
    logger.debug("started %s (pid %d), log %s", name, popen.pid, log)
    return NodeProcess(name, popen, log, ready_file)


def wait_ready(processes: Sequence[NodeProcess], timeout: float,
               on_ready: Callable[[NodeProcess], None] | None = None) -> None:
    """Returns once every process is ready; LocalSwarmError if one exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    waiting = [p for p in processes if p.info is None]
    while waiting:
        for process in list(waiting):
            if process.check_ready():
                waiting.remove(process)
                logger.info("%s ready at %s after %.1f s", process.name, process.address,
                            process.ready_after or 0.0)
                if on_ready is not None:
                    on_ready(process)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise LocalSwarmError(f"{names} not ready after {timeout:g} s; "
                                  f"log {waiting[0].log}:\n{waiting[0].log_tail()}")
        if waiting:
            time.sleep(POLL_INTERVAL)


def _signal_group(process: NodeProcess, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # start_new_session: its group id is its pid


def terminate(processes: Sequence[NodeProcess], grace: float) -> None:
    """SIGTERM to each process group, SIGKILL to what outlives `grace` seconds (0: at once)."""
    alive = [p for p in processes if p.alive]
    for process in alive:
        _signal_group(process, signal.SIGCONT)  # a stopped (SIGSTOP) child cannot act on SIGTERM
        _signal_group(process, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    deadline = time.monotonic() + grace
    for process in alive:
        try:
            process.popen.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            if grace > 0:
                logger.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", process.name,
                               process.pid, grace)
    for process in alive:
        _signal_group(process, signal.SIGKILL)  # also reaps leftovers of the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(5)
