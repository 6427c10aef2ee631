"""The launcher's reading of ready files: what counts as ready, and bad files named clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.launcher import LocalSwarmError, NodeProcess, NodeReady, read_ready
from devtools.launcher.ready import parse_ready

SERVER = {"kind": "server", "pid": 41, "server_id": "ab" * 16, "grpc_address": "127.0.0.1:5001",
          "dht_address": "127.0.0.1:6001", "model": "tiny-llama", "blocks": "0:3", "state": "online"}
DHT = {"kind": "dht", "pid": 42, "dht_address": "127.0.0.1:6000"}


def test_a_server_and_a_dht_node_are_reached_at_their_own_addresses(tmp_path: Path) -> None:
    server = parse_ready(json.dumps(SERVER), tmp_path)
    assert server == NodeReady(**SERVER)  # type: ignore[arg-type]
    assert server.address == "127.0.0.1:5001"
    assert parse_ready(json.dumps(DHT), tmp_path).address == "127.0.0.1:6000"


def test_no_file_yet_is_not_an_error(tmp_path: Path) -> None:
    assert read_ready(tmp_path / "absent.json") is None


@pytest.mark.parametrize(("text", "complaint"), [
    ("{", "not JSON"),
    ("[1]", "expected an object"),
    (json.dumps({**DHT, "kind": "relay"}), "unknown kind 'relay'"),
    (json.dumps({**DHT, "pid": "42"}), "pid is not an integer"),
    (json.dumps({k: v for k, v in SERVER.items() if k != "blocks"}), "blocks missing"),
    (json.dumps({**SERVER, "grpc_address": ""}), "grpc_address missing"),
])
def test_bad_files_are_named_with_what_is_wrong(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "s.ready.json"
    path.write_text(text)
    with pytest.raises(LocalSwarmError, match=rf"ready file .*s\.ready\.json.*{complaint}"):
        read_ready(path)


def _process(tmp_path: Path, script: str) -> NodeProcess:
    popen = subprocess.Popen([sys.executable, "-c", script])
    return NodeProcess("s", popen, tmp_path / "s.log", tmp_path / "s.ready.json")


def test_a_file_from_another_pid_is_stale_and_an_exit_is_reported_with_the_log(tmp_path: Path) -> None:
    process = _process(tmp_path, "import sys; sys.exit(3)")
    (tmp_path / "s.log").write_text("boom: no such model\n")
    process.ready_file.write_text(json.dumps({**SERVER, "pid": process.pid + 1}))
    process.popen.wait()
    assert process.ready() is None
    with pytest.raises(LocalSwarmError, match=r"(?s)s exited with status 3; log .*s\.log:\nboom"):
        process.check_ready()


def test_its_own_file_makes_it_ready_and_rereading_sees_a_migration(tmp_path: Path) -> None:
    process = _process(tmp_path, "import time; time.sleep(30)")
    try:
        process.ready_file.write_text(json.dumps({**SERVER, "pid": process.pid}))
        assert process.check_ready() and process.address == "127.0.0.1:5001"
        assert process.ready_after is not None
        process.ready_file.write_text(json.dumps({**SERVER, "pid": process.pid, "blocks": "3:6"}))
        info = process.ready()
        assert info is not None and info.blocks == "3:6"
    finally:
        process.stop(timeout=5)
    assert not process.alive
