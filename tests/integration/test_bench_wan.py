"""`scripts/bench wan` end to end: a tiny swarm behind delay proxies, chained and not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.bench.wan import WanBenchConfig, format_table, run_bench
from client.local_swarm import PIDS_FILENAME

DELAY_S = 0.020


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def _pids(workdir: Path) -> list[int]:
    return [int(line.split()[0]) for f in workdir.glob(f"*/{PIDS_FILENAME}")
            for line in f.read_text().splitlines()]


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
    assert not [pid for pid in pids if _alive(pid)]


@pytest.mark.slow
def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    bench = subprocess.Popen([sys.executable, "-m", "client.bench.wan", "--tokens", "500", "--rounds", "9",
                              "--workdir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "".join(p.read_text(errors="replace") for p in tmp_path.glob("*/server-*.log")
                      ).count("serving blocks") < 3:
            assert bench.poll() is None, bench.communicate()[0].decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the bench's swarm did not start"
            time.sleep(0.2)
        time.sleep(3)  # the clients connect and generate: interrupt mid-measurement
        assert bench.poll() is None
        bench.send_signal(signal.SIGINT)
        output = bench.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 130 and "interrupted" in output, output[-3000:]
    pids = _pids(tmp_path)
    assert len(pids) >= 4
    deadline = time.monotonic() + 10  # killed process groups are reaped by init, not by us
    while [pid for pid in pids if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]
