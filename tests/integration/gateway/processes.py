"""Test helpers for the gateway's slow tests: `swarm serve` as a real process, and the
Node.js packages the Node and browser tests install with npm.

`GatewayProcess` runs `python -m client.cli serve ... --port 0 --grpc-port 0
--ready-file F` through the launcher's parent-death guard (it goes away with the test
run), logs to a file, and is ready when its ready file appears; it fails fast with the
log's tail if it exits first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import devtools.launcher

PARENT_GUARD = Path(devtools.launcher.__file__).parent / "parent_guard.py"
ROOT = Path(__file__).resolve().parents[3]


class GatewayProcess:
    """One `swarm serve` child."""

    def __init__(self, workdir: Path, peers: Sequence[str], *extra: str, name: str = "gateway") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready_file = workdir / f"{name}.ready.json"
        self.ready_file.unlink(missing_ok=True)
        self.log = workdir / f"{name}.log"
        command = [sys.executable, str(PARENT_GUARD), str(os.getpid()), sys.executable, "-m", "client.cli",
                   "serve", "--initial-peers", *peers, "--port", "0", "--grpc-port", "0",
                   "--ready-file", str(self.ready_file), *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWARM_LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1"}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                            start_new_session=True)
        self.http = ""
        self.grpc = ""

    def wait_ready(self, timeout: float = 300.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                ready = json.loads(self.ready_file.read_text())
                self.http, self.grpc = ready["http"], ready["grpc"]
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"swarm serve exited with {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"swarm serve not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        return self.process.returncode


def node_tools_dir() -> Path:
    """Where npm packages for the tests are installed once (kept between runs)."""
    cache = os.environ.get("SWARM_LLM_CACHE") or str(Path.home() / ".cache" / "swarm-llm")
    return Path(cache) / "node-tests"


def npm_install(packages: Sequence[str]) -> Path:
    """Installs `packages` (npm specs) into node_tools_dir() unless there; returns its
    node_modules. Skips the test (with the reason) only if node or npm is missing or npm fails."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        apt_install("nodejs", "npm")
    target = node_tools_dir()
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / ("installed-" + "+".join(sorted(packages)).replace("/", "_").replace("@", "at-"))
    if not stamp.exists():
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix",
                               str(target), *packages], capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            pytest.skip(f"npm install {' '.join(packages)} failed: {done.stderr[-2000:]}")
        stamp.touch()
    return target / "node_modules"


CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def ensure_chromium() -> str:
    """Debian's chromium (FACTS.md: playwright-core drives it headless), installed with
    apt-get if missing; skips the test, with the reason, only if that is impossible."""
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    apt_install("chromium")
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    pytest.skip("apt-get installed chromium but no chromium binary was found")


def apt_install(*packages: str) -> None:
    """apt-get install `packages`; skips the test with the reason where that is impossible."""
    what = " ".join(packages)
    if shutil.which("apt-get") is None:
        pytest.skip(f"{what} missing and there is no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip(f"{what} missing and installing needs root (apt-get install {what})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, check=False)
        if done.returncode != 0:
            pytest.skip(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
