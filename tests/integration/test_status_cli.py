"""`swarm-node dht` processes as the swarm's DHT, `swarm status` reading it back."""

from __future__ import annotations

import asyncio
import os
import json
import signal
import socket
import sys
from pathlib import Path

import pytest

from client import status_command
from client.swarm_lookup import NotOnSwarm
from swarm.addresses import PeerAddress
from swarm.dht import DhtConfig, SwarmDHT
from swarm.identity import Identity
from swarm.records import ServerState
from tests.dht_factories import make_record

BIN = Path(sys.executable).parent
MODEL = "org/cli-model"
STARTUP_TIMEOUT = 120.0  # the CLIs import torch (other subcommands) before they run


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_dht_node(port: int, peers: list[int]) -> asyncio.subprocess.Process:
    args = ["dht", "--host", "127.0.0.1", "--port", str(port)]
    if peers:
        args += ["--initial-peers", *(f"127.0.0.1:{p}" for p in peers)]
    return await asyncio.create_subprocess_exec(
        str(BIN / "swarm-node"), *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def wait_for_line(process: asyncio.subprocess.Process, text: str) -> str:
    assert process.stderr is not None
    seen = []
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while line := (await process.stderr.readline()).decode():
            seen.append(line)
            if text in line:
                return line
    raise AssertionError(f"{text!r} never logged; got {''.join(seen)}")


async def swarm_status(*args: str, peers_env: str = "") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SWARM_INITIAL_PEERS"}
    if peers_env:
        env["SWARM_INITIAL_PEERS"] = peers_env
    process = await asyncio.create_subprocess_exec(
        str(BIN / "swarm"), "status", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    async with asyncio.timeout(STARTUP_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.skipif(not (BIN / "swarm-node").exists(), reason="console scripts not installed (pip install -e .)")
async def test_status_shows_what_servers_announced(capsys: pytest.CaptureFixture[str]) -> None:
    ports = [free_udp_port(), free_udp_port()]
    nodes = [await start_dht_node(ports[0], []), await start_dht_node(ports[1], [ports[0]])]
    try:
        await asyncio.gather(*(wait_for_line(n, f"DHT node listening on 127.0.0.1:{p}") for n, p in zip(nodes, ports)))
        config = DhtConfig(rpc_timeout=1.0, lookup_timeout=5.0)
        async with await SwarmDHT.start("127.0.0.1", 0, [PeerAddress("127.0.0.1", p) for p in ports], config=config) as dht:
            assert dht.num_peers == 2
            servers = {}
            for blocks, state in (((0, 3), ServerState.ONLINE), ((3, 5), ServerState.ONLINE), ((2, 4), ServerState.JOINING)):
                identity = Identity.generate()
                record = make_record(identity, blocks, state=state, model=MODEL, num_blocks=6, port=6000 + blocks[0])
                assert await dht.announce(identity, record, ttl=120) > 0
                servers[identity.server_id] = record
            peer = f"127.0.0.1:{ports[0]}"
            rc_json, out_json, _ = await swarm_status("--json", peers_env=peer)  # peers from $SWARM_INITIAL_PEERS
            # the same command in this process (each CLI process spends seconds importing torch)
            rc_text = await status_command.status((PeerAddress("127.0.0.1", ports[1]),), MODEL, False, 5.0)
            out_text = capsys.readouterr().out
            with pytest.raises(NotOnSwarm, match=f"'org/nothing' is not announced on the swarm; it serves: {MODEL}"):
                await status_command.status((PeerAddress("127.0.0.1", ports[1]),), "org/nothing", False, 5.0)
            out_missing = capsys.readouterr().out
        assert rc_json == 0 and rc_text == 0
        (shown,) = json.loads(out_json)["models"]
        assert shown["model"] == MODEL and shown["num_blocks"] == 6 and shown["hidden_size"] == 64
        assert {s["server_id"] for s in shown["servers"]} == set(servers)
        assert shown["uncovered_blocks"] == [5] and shown["complete"] is False
        assert shown["totals"]["online"] == 2 and shown["totals"]["joining"] == 1
        for block in shown["blocks"]:
            assert set(block["servers"]) == {sid for sid, r in servers.items() if block["block"] in r.blocks}
        for server_id in servers:
            assert server_id[:8] in out_text
        assert "NO LIVE SERVER" in out_text and "INCOMPLETE" in out_text and "(joining)" in out_text
        assert "not on this swarm" in out_missing
    finally:
        for node, sig in zip(nodes, (signal.SIGTERM, signal.SIGINT)):
            if node.returncode is None:
                node.send_signal(sig)
        codes = [await asyncio.wait_for(node.wait(), 30) for node in nodes]
    assert codes == [0, 0]


@pytest.mark.skipif(not (BIN / "swarm").exists(), reason="console scripts not installed (pip install -e .)")
async def test_status_without_peers_says_how_to_give_them() -> None:
    code, out, err = await swarm_status("--json")
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "--initial-peers" in err and "$SWARM_INITIAL_PEERS" in err, err
