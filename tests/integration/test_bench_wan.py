"""`scripts/bench wan` end to end: a tiny swarm behind delay proxies, chained and not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.bench.wan import WanBenchConfig, format_table, run_bench
from devtools.launcher import listed_pids
from tests.wait import pid_running, wait_pids_gone, wait_until

DELAY_S = 0.020
REPO = Path(__file__).resolve().parents[2]


def _pids(workdir: Path) -> list[int]:
    """Every process the bench started, in each of its start attempts' subdirectories."""
    return [pid for attempt in sorted(workdir.glob("attempt-*")) for pid in listed_pids(attempt)]


def _first_server_sessions(workdir: Path) -> int:
    """Sessions the first server (blocks 0:...) has opened: one per generate call, either mode."""
    return sum(log.read_text(errors="replace").count(" opened: ") for log in workdir.glob("*/server-0-*.log"))


@pytest.mark.slow
def test_chaining_beats_relaying_and_neither_beats_physics(tmp_path: Path) -> None:
    config = WanBenchConfig(delay_s=DELAY_S, tokens=6, rounds=1, workdir=tmp_path)
    result = run_bench(config)
    print(format_table(result))
    chained, unchained = result.mode("chained"), result.mode("unchained")
    assert chained.steps == unchained.steps == config.tokens - 1
    # physics: every token crosses servers + 1 (chained) or 2 x servers (relayed) links
    assert chained.per_token_s >= (config.servers + 1) * DELAY_S
    assert unchained.per_token_s >= 2 * config.servers * DELAY_S
    assert chained.per_token_s < unchained.per_token_s
    assert chained.floor_s == pytest.approx(4 * DELAY_S + chained.compute_s)
    # every process the bench started is gone
    pids = _pids(tmp_path)
    assert len(pids) >= 4
    assert not [pid for pid in pids if pid_running(pid)]


@pytest.mark.slow
def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    bench = subprocess.Popen([sys.executable, "-m", "devtools.bench.wan", "--tokens", "500", "--rounds", "9",
                              "--workdir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             cwd=REPO, start_new_session=True)
    try:
        # both modes' warm-up calls, then the first measured one: interrupt mid-measurement
        wait_until(lambda: _first_server_sessions(tmp_path) >= 3 or bench.poll() is not None, 180,
                   "the bench's clients generate through its swarm")
        assert bench.poll() is None, bench.communicate()[0].decode(errors="replace")[-3000:]
        bench.send_signal(signal.SIGINT)
        output = bench.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 130 and "interrupted" in output, output[-3000:]
    pids = _pids(tmp_path)
    assert len(pids) >= 4
    wait_pids_gone(pids, 10)  # killed process groups are reaped by init, not by us
