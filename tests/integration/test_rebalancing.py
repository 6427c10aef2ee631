"""Servers place themselves and move where the swarm needs them, without breaking sessions.

Real `swarm-node start` processes with `--num-blocks` (not pinned), short balance periods.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from client.model import AutoDistributedModelForCausalLM
from swarm.dht import SwarmDHT, SwarmMap, parse_address
from tests.integration.local_swarm import LocalSwarm, Proc
from tests.integration.slicing_models import VOCAB, save_checkpoint

FAST = ["--balance-period", "1.5", "--update-period", "1", "--throughput", "100"]


def _server_id(proc: Proc) -> str:
    return re.search(r"\(server ([0-9a-f]{8})\)", proc.text()).group(1)  # type: ignore[union-attr]


async def _map(peer: str, model: str) -> SwarmMap:
    dht = await SwarmDHT.start("127.0.0.1", 0, [parse_address(peer)])
    try:
        return await dht.get_swarm_map(model, 6)
    finally:
        await dht.stop()


def _wait_covered(peer: str, live: list[Proc], timeout: float = 90.0) -> SwarmMap:
    """Waits until every block has an ONLINE server, all of them among `live`."""
    live_ids = {_server_id(p) for p in live}
    deadline = time.monotonic() + timeout
    while True:
        swarm_map = asyncio.run(_map(peer, "tiny-llama"))
        online = {s.server_id[:8] for s in swarm_map.servers if s.live}
        if swarm_map.complete and online <= live_ids:
            return swarm_map
        if time.monotonic() > deadline:
            raise AssertionError(f"not covered in {timeout} s: uncovered {swarm_map.uncovered_blocks}, "
                                 f"online {sorted(online)}, live {sorted(live_ids)}")
        time.sleep(0.5)


def test_unpinned_servers_cover_the_model_and_recover_from_churn(tmp_path: Path) -> None:
    model_dir = save_checkpoint("llama", tmp_path / "tiny-llama", layers=6)
    swarm = LocalSwarm(tmp_path)
    try:
        peer = swarm.start_dht().address
        first = [swarm.spawn_server(f"s{i}", model_dir, [peer], "--num-blocks", "2", *FAST) for i in range(4)]
        for proc in first:
            swarm.wait_serving(proc)
        _wait_covered(peer, first)
        more = [swarm.start_server(f"s{i}", model_dir, [peer], "--num-blocks", "2", *FAST) for i in (4, 5)]
        for proc in first[:2]:
            swarm.stop(proc, signal.SIGKILL)
        survivors = first[2:] + more
        final = _wait_covered(peer, survivors)
        assert {s.server_id[:8] for s in final.servers if s.live} <= {_server_id(p) for p in survivors}
    finally:
        swarm.stop_all()


class _SlowStreamer:
    """Paces generation and starts a process after a few tokens."""

    def __init__(self, at: int, action: object) -> None:
        self.at, self.action, self.seen = at, action, -1

    def put(self, value: torch.Tensor) -> None:
        self.seen += 1
        if self.seen == self.at:
            self.action()  # type: ignore[operator]
        time.sleep(0.25)

    def end(self) -> None:
        pass


def test_generation_during_a_migration_completes_unchanged(tmp_path: Path) -> None:
    model_dir = save_checkpoint("llama", tmp_path / "tiny-llama", layers=6)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.randint(1, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    expected = reference.generate(ids, max_new_tokens=40, do_sample=False)
    swarm = LocalSwarm(tmp_path)
    try:
        peer = swarm.start_dht().address
        swarm.start_server("pinned", model_dir, [peer], "--blocks", "0:3", *FAST)
        mover = swarm.start_server("mover", model_dir, [peer], "--num-blocks", "3", "--drain-grace", "1", *FAST)
        assert "serving blocks 3:6" in mover.text()
        fast_tail: list[Proc] = []

        def crowd_the_tail() -> None:
            # a much faster server on 3:6 makes 0:3 the bottleneck: the mover should go there
            # (started while the generation waits, so that the move happens mid-generation)
            fast_tail.append(swarm.start_server("fast", model_dir, [peer], "--blocks", "3:6",
                                                "--update-period", "1", "--throughput", "1000"))

        model = AutoDistributedModelForCausalLM.from_pretrained(model_dir, [peer])
        try:
            out = model.generate(ids, max_new_tokens=40, do_sample=False, streamer=_SlowStreamer(2, crowd_the_tail))
        finally:
            model.close()
        assert torch.equal(out, expected)
        assert "rebalancing: moving from blocks 3:6 to 0:3" in mover.text(), mover.text()[-2000:]
    finally:
        swarm.stop_all()
