"""Fixtures of the gateway's slow tests: one SmolLM2 swarm of 3 servers (blocks 0:10,
10:20, 20:30) and one `swarm serve` process in front of it, shared by the test modules
of this directory (session scope: the swarm takes ~30 s to start, the gateway ~15 s)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devtools.launcher import LocalSwarm, LocalSwarmConfig
from swarm.default_model import resolve_model
from swarm.records import BlockRange
from tests.integration.gateway.processes import GatewayProcess

SPANS = (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30))
SERVER_ARGS = ("--throughput", "100", "--drain-grace", "2")
UPDATE_PERIOD_S = 2.0
"""The page's refresh period (`swarm serve --update-period`)."""


@dataclass
class Served:
    model_dir: str
    swarm: LocalSwarm
    gateway: GatewayProcess


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    model_dir = resolve_model("default")
    workdir = tmp_path_factory.mktemp("gateway-swarm")
    config = LocalSwarmConfig(model_dir, SPANS, workdir=workdir, server_args=SERVER_ARGS,
                              env={"OMP_NUM_THREADS": "1"})
    with LocalSwarm(config) as swarm:
        gateway = GatewayProcess(workdir, swarm.initial_peers, "--update-period", str(UPDATE_PERIOD_S))
        try:
            gateway.wait_ready()
            yield Served(model_dir, swarm, gateway)
        finally:
            gateway.stop()
