"""`scripts/bench mixed` end to end: three one-server swarms of the default model, decoding next to training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.launcher import listed_pids
from tests.wait import wait_pids_gone, wait_until

REPO = Path(__file__).resolve().parents[2]


def _assert_all_six_stopped(workdir: Path) -> None:
    """Every process of the three swarms (a DHT node and a server each) is gone."""
    pids = [pid for swarm_dir in sorted(workdir.iterdir()) if swarm_dir.is_dir() for pid in listed_pids(swarm_dir)]
    assert len(pids) == 6
    wait_pids_gone(pids, 10)


def _sessions_opened(workdir: Path) -> int:
    """The most inference sessions any one swarm's server has opened so far."""
    return max((log.read_text(errors="replace").count(" opened: ") for log in workdir.glob("*/server-*.log")),
               default=0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_mixed_reports_every_swarm_and_stops_its_processes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devtools.bench", "mixed", "--rounds", "1", "--decoders", "2", "--tokens", "4",
         "--train-passes", "1", "--train-tokens", "16", "--max-loaded-tokens", "30", "--json",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=500, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["same_tokens"] is True  # greedy decoding agrees whatever the queue order
    assert set(report["figures"]) == {"priority", "strict", "fifo"}
    for figures in report["figures"].values():
        assert all(len(values) == 1 for values in figures.values())
        assert figures["alone"][0] > 0 and figures["loaded"][0] > 0 and figures["train_pass"][0] > 0
        assert 2 <= figures["loaded_tokens"][0] <= 2 * 30  # both clients decoded while training ran
    for other in ("fifo", "strict"):
        rows = report["rows"][other]
        assert [row["name"] for row in rows] == ["decode alone", "decode next to training",
                                                 "training pass (fwd + bwd)"]
        assert all(row["ratio"] == pytest.approx(row["median_priority_s"] / row[f"median_{other}_s"])
                   for row in rows)
    # each swarm ran in its own subdirectory: a DHT node and a server with the scheduling asked for
    expected = {"priority": "priority scheduling, batch share 0.2", "strict": "priority scheduling, batch share 0",
                "fifo": "fifo scheduling"}
    for name, queue in expected.items():
        (log,) = (tmp_path / name).glob("server-*.log")
        assert f"compute queue: {queue}\n" in log.read_text(), name
    _assert_all_six_stopped(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_mid_measurement_stops_every_process(tmp_path: Path) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-m", "devtools.bench", "mixed", "--rounds", "3", "--tokens", "2000", "--train-passes", "5",
         "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, start_new_session=True)
    assert bench.stdout is not None
    seen = []
    try:
        for line in bench.stdout:
            seen.append(line)
            if "warming up" in line:
                break
        assert any("warming up" in line for line in seen), "".join(seen)
        # past the warm-up (a session per decoder and swarm): the first swarm's clients are
        # measuring, so the bench has decoders and a trainer to stop
        wait_until(lambda: _sessions_opened(tmp_path) > 2 or bench.poll() is not None, 300,
                   "a swarm's decoders open their sessions after the warm-up")
        assert bench.poll() is None, "".join(seen)
        began = time.monotonic()
        bench.send_signal(signal.SIGINT)
        rest, _ = bench.communicate(timeout=120)
        stopped_in = time.monotonic() - began
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    output = "".join(seen) + rest
    assert bench.returncode == 130 and "interrupted" in output, output[-3000:]
    # the decoders and the trainer stop after their step or pass under way, not after the
    # phase's 2000 tokens (minutes)
    assert stopped_in < 30, f"{stopped_in:.1f} s\n{output[-3000:]}"
    _assert_all_six_stopped(tmp_path)
