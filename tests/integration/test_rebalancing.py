"""Servers place themselves and move where the swarm needs them, without breaking sessions.

Real `swarm-node start` processes with `--num-blocks` (not pinned), short balance periods.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from client.model import AutoDistributedModelForCausalLM
from devtools.launcher import LocalSwarm, LocalSwarmConfig, NodeProcess
from swarm.addresses import PeerAddress
from swarm.dht import SwarmDHT, SwarmMap
from tests.integration.slicing_models import VOCAB, save_checkpoint
from tests.wait import wait_for_value, wait_until

FAST = ["--balance-period", "1.5", "--update-period", "1", "--throughput", "100"]


def _server_id(proc: NodeProcess) -> str:
    """The first 8 hex digits of its id (what the swarm map's ids are compared by)."""
    info = proc.ready()
    assert info is not None, f"{proc.name} is not serving"
    return info.server_id[:8]


def _blocks(proc: NodeProcess) -> str:
    """The blocks it serves now, from its ready file (rewritten after a migration)."""
    info = proc.ready()
    return info.blocks if info is not None else ""


async def _map(peer: str, model: str) -> SwarmMap:
    dht = await SwarmDHT.start("127.0.0.1", 0, [PeerAddress.parse(peer)])
    try:
        return await dht.get_swarm_map(model, 6)
    finally:
        await dht.stop()


def _wait_covered(peer: str, live: list[NodeProcess], timeout: float = 90.0) -> SwarmMap:
    """Waits until every block has an ONLINE server, all of them among `live`."""
    live_ids = {_server_id(p) for p in live}
    last: list[SwarmMap] = []

    def covered() -> SwarmMap | None:
        last[:] = [asyncio.run(_map(peer, "tiny-llama"))]
        online = {s.server_id[:8] for s in last[0].servers if s.live}
        return last[0] if last[0].complete and online <= live_ids else None

    def state() -> str:
        online = sorted(s.server_id[:8] for s in last[0].servers if s.live) if last else []
        uncovered = last[0].uncovered_blocks if last else "?"
        return f"uncovered {uncovered}, online {online}, live {sorted(live_ids)}"

    return wait_for_value(covered, timeout, "every block served by a live server", interval=0.5, detail=state)


def test_unpinned_servers_cover_the_model_and_recover_from_churn(tmp_path: Path) -> None:
    model_dir = save_checkpoint("llama", tmp_path / "tiny-llama", layers=6)
    swarm = LocalSwarm(LocalSwarmConfig.for_tests(tmp_path))
    try:
        peer = swarm.start_dht().address
        first = [swarm.spawn_server(f"s{i}", model_dir, [peer], "--num-blocks", "2", *FAST) for i in range(4)]
        for proc in first:
            swarm.wait_serving(proc)
        _wait_covered(peer, first)
        more = [swarm.start_server(f"s{i}", model_dir, [peer], "--num-blocks", "2", *FAST) for i in (4, 5)]
        for proc in first[:2]:
            proc.stop(signal.SIGKILL)
        survivors = first[2:] + more
        final = _wait_covered(peer, survivors)
        assert {s.server_id[:8] for s in final.servers if s.live} <= {_server_id(p) for p in survivors}
    finally:
        swarm.stop_all()


class _PausingStreamer:
    """Runs `action` once, inside the generation, after `at` tokens: the generation
    waits (its sessions stay open) until `action` returns."""

    def __init__(self, at: int, action: Callable[[], None]) -> None:
        self.at, self.action, self.seen = at, action, -1

    def put(self, value: torch.Tensor) -> None:
        self.seen += 1
        if self.seen == self.at:
            self.action()

    def end(self) -> None:
        pass


def test_generation_during_a_migration_completes_unchanged(tmp_path: Path) -> None:
    model_dir = save_checkpoint("llama", tmp_path / "tiny-llama", layers=6)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.randint(1, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    expected = reference.generate(ids, max_new_tokens=40, do_sample=False)
    swarm = LocalSwarm(LocalSwarmConfig.for_tests(tmp_path))
    try:
        peer = swarm.start_dht().address
        swarm.start_server("pinned", model_dir, [peer], "--blocks", "0:3", *FAST)
        mover = swarm.start_server("mover", model_dir, [peer], "--num-blocks", "3", "--drain-grace", "1", *FAST)
        assert _blocks(mover) == "3:6"

        def move_mid_generation() -> None:
            # a much faster server on 3:6 makes 0:3 the bottleneck: the mover should go there
            # while this generation holds a session on it
            swarm.start_server("fast", model_dir, [peer], "--blocks", "3:6",
                               "--update-period", "1", "--throughput", "1000")
            wait_until(lambda: _blocks(mover) == "0:3", 60, "the mover migrates from 3:6 to 0:3",
                       detail=mover.log_tail)

        model = AutoDistributedModelForCausalLM.from_pretrained(model_dir, [peer])
        try:
            streamer = _PausingStreamer(2, move_mid_generation)
            out = model.generate(ids, max_new_tokens=40, do_sample=False, streamer=streamer)
        finally:
            model.close()
        assert streamer.seen > streamer.at  # the move came mid-generation, and the generation went on
        assert torch.equal(out, expected)
    finally:
        swarm.stop_all()
