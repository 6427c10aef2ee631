"""`--ready-file`: `swarm-node dht` and `swarm-node start` write their facts once ready.

The addresses in the files are checked against the swarm itself: the server's ready
file must name the gRPC address and id it announced on the DHT whose address the DHT
node's ready file gives, and a stopped server must leave "draining" behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.addresses import PeerAddress
from swarm.dht import DhtConfig, SwarmDHT
from swarm.records import ServerState
from tests.integration.slicing_models import save_checkpoint
from tests.wait import wait_for_value

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 180.0  # each CLI imports torch; the server also loads and measures blocks


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        facts: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet (a half-written file is never seen: rename)
        return None
    return facts


@pytest.fixture()
def processes(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def spawn(processes: list[subprocess.Popen[bytes]], tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("wb")
    env = {**os.environ, "SWARM_LLM_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen([str(BIN / "swarm-node"), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    processes.append(process)
    return process


def wait_ready(path: Path, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()}")
        return read_json(path)

    return wait_for_value(ready, STARTUP_TIMEOUT, f"{path.name} to appear", detail=log.read_text)


async def announced(dht_address: str, model: str) -> dict[str, str]:
    """server id -> gRPC address of the ONLINE servers on block 0, as the DHT says."""
    config = DhtConfig(client_mode=True)
    async with await SwarmDHT.start("127.0.0.1", 0, [PeerAddress.parse(dht_address)], config=config) as dht:
        entries = await dht.get_block_entries(model, 0)
    return {e.server_id: e.address for e in entries if e.state is ServerState.ONLINE}


def test_ready_files_name_the_addresses_the_swarm_uses(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    dht_file, server_file = tmp_path / "dht.json", tmp_path / "server.json"
    dht = spawn(processes, tmp_path, "dht", "dht", "--host", "127.0.0.1", "--port", "0",
                "--ready-file", str(dht_file))
    dht_facts = wait_ready(dht_file, dht, tmp_path / "dht.log")
    assert dht_facts["kind"] == "dht" and dht_facts["pid"] == dht.pid
    dht_address = PeerAddress.parse(dht_facts["dht_address"])
    assert dht_address.host == "127.0.0.1" and dht_address.port > 0

    model_dir = save_checkpoint("llama", tmp_path / "tiny-ready", layers=4)
    server = spawn(processes, tmp_path, "server", "start", "--model", str(model_dir), "--blocks", "0:2",
                   "--throughput", "100", "--initial-peers", str(dht_address), "--ready-file", str(server_file))
    facts = wait_ready(server_file, server, tmp_path / "server.log")
    assert {k: facts[k] for k in ("kind", "pid", "model", "blocks", "state")} == {
        "kind": "server", "pid": server.pid, "model": "tiny-ready", "blocks": "0:2", "state": "online"}
    assert PeerAddress.parse(facts["dht_address"]).port > 0
    assert "serving blocks 0:2 of tiny-ready at " + facts["grpc_address"] in (tmp_path / "server.log").read_text()
    seen = asyncio.run(announced(str(dht_address), "tiny-ready"))
    assert seen == {facts["server_id"]: facts["grpc_address"]}

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    final = read_json(server_file)
    assert final is not None and final["state"] == "draining"
    assert not Path(f"{server_file}.tmp").exists()
