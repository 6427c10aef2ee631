"""Real swarm processes on 127.0.0.1 for integration tests: a DHT bootstrap and servers.

Each process is `swarm-node ...` from the venv, logging to its own file; a start waits
for the log line that says the process is ready and parses the address from it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    address: str = ""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not log {pattern!r} in {timeout} s:\n{self.text()[-3000:]}")


@dataclass
class LocalSwarm:
    """Starts and stops swarm processes; everything is killed on `stop_all`."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: {
        **os.environ, "SWARM_LLM_CACHE": os.environ.get("SWARM_LLM_CACHE", ""),
        "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    })

    def __post_init__(self) -> None:
        if not self.env["SWARM_LLM_CACHE"]:
            self.env["SWARM_LLM_CACHE"] = str(self.workdir / "cache")

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log = self.workdir / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen([str(BIN / "swarm-node"), *args], stdout=handle, stderr=subprocess.STDOUT,
                                 env=self.env, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_dht(self, name: str = "dht", timeout: float = 30.0) -> Proc:
        proc = self._spawn(name, ["dht", "--host", "127.0.0.1", "--port", "0"])
        proc.address = proc.wait_for(r"DHT node listening on (\S+:\d+)", timeout).group(1)
        return proc

    def spawn_server(self, name: str, model: Path | str, peers: list[str], *extra: str) -> Proc:
        return self._spawn(name, ["start", "--model", str(model), "--initial-peers", *peers,
                                  "--host", "127.0.0.1", *extra])

    def start_server(self, name: str, model: Path | str, peers: list[str], *extra: str,
                     timeout: float = 120.0) -> Proc:
        proc = self.spawn_server(name, model, peers, *extra)
        return self.wait_serving(proc, timeout)

    @staticmethod
    def wait_serving(proc: Proc, timeout: float = 120.0) -> Proc:
        proc.address = proc.wait_for(r"serving blocks \d+:\d+ of \S+ at (\S+:\d+)", timeout).group(1)
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if proc.popen.poll() is None:
            proc.popen.send_signal(sig)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        return proc.popen.returncode

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.popen.kill()
        for proc in self.procs:
            proc.popen.wait()
