"""Shared fixtures: tiny checkpoints and real local swarms of `swarm-node` processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.launcher import LocalSwarm, LocalSwarmConfig, NodeProcess
from tests.integration.slicing_models import save_checkpoint


@dataclass
class RunningSwarm:
    swarm: LocalSwarm
    model_dir: Path
    dht: NodeProcess
    servers: list[NodeProcess]

    @property
    def peers(self) -> list[str]:
        return [self.dht.address]


def start_swarm(tmp: Path, family: str, splits: list[str], *extra: str, layers: int = 6) -> RunningSwarm:
    model_dir = save_checkpoint(family, tmp / f"tiny-{family}", layers=layers)
    swarm = LocalSwarm(LocalSwarmConfig.for_tests(tmp))
    try:
        dht = swarm.start_dht()
        procs = [swarm.spawn_server(f"{family}-{i}", model_dir, [dht.address], "--blocks", blocks,
                                    "--throughput", "100", *extra)
                 for i, blocks in enumerate(splits)]
        servers = [swarm.wait_serving(p) for p in procs]
    except BaseException:
        swarm.stop_all()
        raise
    return RunningSwarm(swarm, model_dir, dht, servers)


@pytest.fixture(scope="module")
def llama_swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    """A tiny Llama (6 blocks) on 3 server processes: 0:2, 2:4, 4:6."""
    running = start_swarm(tmp_path_factory.mktemp("llama-swarm"), "llama", ["0:2", "2:4", "4:6"],
                          "--cache-tokens", "4096", "--max-alloc-timeout", "0.5",
                          "--session-idle-timeout", "3", "--update-period", "2", "--metrics-port", "0")
    yield running
    running.swarm.stop_all()
