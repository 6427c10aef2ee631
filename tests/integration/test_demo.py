"""The demo and the local-swarm launcher: answers, and no process left behind, ever.

The SmolLM2 demo runs are slow (real model); the launcher's failure paths use a tiny
random-weight Llama and take seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.launcher import PIDS_FILENAME, LocalSwarm, LocalSwarmConfig, LocalSwarmError, listed_pids, read_ready
from swarm.records import BlockRange
from tests.integration.slicing_models import save_checkpoint
from tests.wait import pid_running, wait_pids_gone, wait_until

REPO = Path(__file__).resolve().parents[2]


def demo_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "devtools.demo", "--workdir", str(workdir), *args]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_answers_and_stops_every_process(tmp_path: Path) -> None:
    done = subprocess.run(demo_command(tmp_path, "--max-new-tokens", "16"), capture_output=True, text=True,
                          timeout=500, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    for expected in ("DHT bootstrap node listening on 127.0.0.1:", "server-0-10 ready", "server-10-20 ready",
                     "server-20-30 ready", "Paris", "[route: ", "tokens/s]", "Demo took"):
        assert expected in out, out
    assert out.count(" -> ") >= 2  # the route crosses the three servers
    pids = listed_pids(tmp_path)
    assert len(pids) == 4
    wait_pids_gone(pids, 5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    # like a terminal: the demo in its own process group, SIGINT to the whole group
    demo = subprocess.Popen(demo_command(tmp_path, "--max-new-tokens", "200", "Tell me a long story."),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    assert demo.stdout is not None
    seen = []
    for line in demo.stdout:
        seen.append(line)
        if "Swarm ready" in line:
            break
    assert any("Swarm ready" in line for line in seen), "".join(seen)
    # interrupt as soon as the answer streams: a fixed sleep could outlast a short answer
    while (char := demo.stdout.read(1)) and char.isspace():
        seen.append(char)
    seen.append(char)
    assert char, "".join(seen)
    os.killpg(demo.pid, signal.SIGINT)
    rest, _ = demo.communicate(timeout=120)
    assert demo.returncode == 130, "".join(seen) + rest
    assert "Interrupted" in rest
    wait_pids_gone(listed_pids(tmp_path), 5)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint("llama", tmp_path_factory.mktemp("tiny") / "tiny-llama", layers=2)


def test_launcher_killed_outright_takes_its_processes_along(tiny_llama: Path, tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-m", "devtools.launcher", "--model", str(tiny_llama), "--blocks", "0:1", "1:2",
         "--workdir", str(tmp_path), "--server-arg=--throughput", "--server-arg=100"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert launcher.stdout is not None
    try:
        assert launcher.stdout.readline().startswith("initial peers: 127.0.0.1:")
        pids = listed_pids(tmp_path)
        assert len(pids) == 3 and all(pid_running(p) for p in pids)
    finally:
        launcher.kill()  # SIGKILL: no cleanup code of its own runs
        launcher.wait()
    wait_pids_gone(pids, 30, "the parent-death signal stops the launcher's children")


def test_failed_start_names_the_log_and_stops_the_rest(tmp_path: Path) -> None:
    config = LocalSwarmConfig(str(tmp_path / "no-such-model"), (BlockRange(0, 1),), workdir=tmp_path,
                              start_timeout=120)
    swarm = LocalSwarm(config)
    with pytest.raises(LocalSwarmError, match=r"server-0-1 exited with status \d+; log .*server-0-1\.log"):
        swarm.start()
    assert swarm.dht is not None and not swarm.dht.alive
    wait_pids_gone(listed_pids(tmp_path), 5)


def test_shell_trap_stops_only_listed_swarm_nodes(tmp_path: Path) -> None:
    ready = tmp_path / "dht.ready.json"
    node = subprocess.Popen([sys.executable, "-m", "node.cli", "dht", "--host", "127.0.0.1", "--port", "0",
                             "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        wait_until(lambda: read_ready(ready) is not None or node.poll() is not None, 30, "the DHT node is ready")
        assert node.poll() is None
        began = time.monotonic()
        (tmp_path / PIDS_FILENAME).write_text(f"{node.pid} dht\n{bystander.pid} not-ours\n")
        subprocess.run(["bash", "-c", f"source scripts/lib/procs.sh; stop_listed_processes {tmp_path / PIDS_FILENAME}"],
                       cwd=REPO, check=True, timeout=30)
        assert node.wait(10) == 0  # stopped by SIGTERM, cleanly, not killed
        assert time.monotonic() - began < 9  # the wait loop noticed (a zombie counts as gone)
        assert bystander.poll() is None
    finally:
        for proc in (node, bystander):
            proc.kill()
            proc.wait()
