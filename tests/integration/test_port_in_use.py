"""A second node on a taken port refuses to start: one line on stderr, exit code 1, at once
(and so does a server with unusable TLS files).

grpcio sets SO_REUSEPORT by default, so a second server on a taken port used to start
"fine" and get half the connections. Here the port is held by a gRPC server with
grpcio's defaults (what another program, or an old swarm-node, does) and the DHT port by
a real `swarm-node dht`; `swarm-node start` and `swarm-node dht` must refuse before
doing any work (no model resolved, no log line).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from devtools.launcher import LocalSwarm, LocalSwarmConfig
from swarm.rpc import PortInUse, bind_server, make_server
from tests.integration.slicing_models import save_checkpoint

NODE = [sys.executable, "-m", "node.cli"]


@pytest.fixture(scope="module")
def held_grpc_port() -> Iterator[int]:
    """A port a gRPC server with grpcio's default options (SO_REUSEPORT on) serves on."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


def _run(*args: str) -> tuple[int, str, float]:
    began = time.monotonic()
    done = subprocess.run([*NODE, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def _startup_seconds() -> float:
    """What the command costs before it does anything (the interpreter and the CLI's imports)."""
    return _run("start", "--help")[2]


def test_a_taken_grpc_port_is_refused_in_one_line(held_grpc_port: int, tmp_path: Path) -> None:
    model = save_checkpoint("llama", tmp_path / "tiny-llama", layers=2)
    baseline = _startup_seconds()
    code, output, seconds = _run("start", "--model", str(model), "--port", str(held_grpc_port))
    assert code == 1
    assert output == (f"swarm-node: error: gRPC port 127.0.0.1:{held_grpc_port} is in use (another server?); "
                      "choose another --port\n")
    # ~1.3 s on an idle 2-core machine, nearly all of it the interpreter's start-up
    assert seconds < max(2.0, baseline + 1.0), (seconds, baseline)


def test_without_the_option_grpc_would_share_the_port(held_grpc_port: int) -> None:
    # the attack surface: grpcio's default lets a second server bind the same port ...
    shared = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    assert shared.add_insecure_port(f"127.0.0.1:{held_grpc_port}") == held_grpc_port
    shared.stop(grace=None)

    # ... ours does not, and says why
    async def ours() -> None:
        bind_server(make_server(), "127.0.0.1", held_grpc_port)

    import asyncio

    with pytest.raises(PortInUse, match=f"gRPC port 127.0.0.1:{held_grpc_port} is in use"):
        asyncio.run(ours())


def test_a_taken_dht_port_is_refused_by_start_and_dht(tmp_path: Path) -> None:
    swarm = LocalSwarm(LocalSwarmConfig.for_tests(tmp_path))
    try:
        dht = swarm.start_dht()
        port = int(dht.address.rsplit(":", 1)[1])
        code, output, seconds = _run("start", "--model", str(tmp_path / "never-read"), "--dht-port", str(port))
        assert code == 1, output
        assert output == (f"swarm-node: error: DHT port 127.0.0.1:{port} is in use (another server?); "
                          "choose another --dht-port\n")
        code, output, _ = _run("dht", "--host", "127.0.0.1", "--port", str(port))
        assert code == 1, output
        assert output == (f"swarm-node: error: DHT port 127.0.0.1:{port} is in use (another server?); "
                          "choose another --port\n")
        assert dht.alive  # the holder is untouched
    finally:
        swarm.stop_all()


def test_a_tls_server_without_a_ca_for_its_peers_is_refused(tmp_path: Path) -> None:
    from tests.unit.test_security import write_tls_files

    tls = write_tls_files(tmp_path)
    code, output, _ = _run("start", "--model", str(tmp_path / "never-read"), "--tls-cert", str(tls.cert),
                           "--tls-key", str(tls.key))
    assert code == 1 and output.count("\n") == 1
    assert output.startswith("swarm-node: error: --tls-cert needs --tls-ca too")
    code, output, _ = _run("start", "--model", str(tmp_path / "never-read"), "--tls-cert", str(tls.cert),
                           "--tls-key", str(tls.ca), "--tls-ca", str(tls.ca))
    assert code == 1 and "not a certificate and its matching private key" in output and output.count("\n") == 1
