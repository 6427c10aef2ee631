"""Two models served in one swarm: one DHT, each server holding blocks of one of them.

Slow (~40 s here): a DHT node and four `swarm-node start` processes, two per model, for a
tiny Llama and a tiny Qwen2 (6 blocks each, named tiny-llama and tiny-qwen2 after their
directories). The DHT keys carry the model name, so routing, placement and `swarm status`
of one model must never see the other's records. The test makes a mixed view visible:

- qwen servers announce high speeds (3:6 at 5000 tok/s, 0:3 at 1000), llama-0 holds 0:3
  at 100. llama-1 joins unpinned (--num-blocks 3). Counting only llama records, 3:6 has
  no server and it must go there; counting qwen's too, 0:3 (1100) would look weakest.
- llama-1 then runs its rebalancer every ~1 s. Over llama records alone, a move helps
  nothing; over mixed records, moving to 0:3 would lift the "swarm" from 1100 to 1200
  tok/s (> 1/0.95), leaving llama's 3:6 without a server. It must stay.

Then two clients, one per model, generate at the same time in two threads; each output
equals transformers' local greedy run of its checkpoint, token for token. `swarm status`
lists both models, complete, each with its own two servers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from client import status_command
from client.model import AutoDistributedModelForCausalLM
from devtools.launcher import LocalSwarm, LocalSwarmConfig, NodeProcess
from swarm.addresses import PeerAddress
from tests.integration.slicing_models import VOCAB, load_reference, save_checkpoint
from tests.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAST = ("--update-period", "1", "--balance-period", "1")
NEW_TOKENS = 16


@dataclass
class TwoModels:
    swarm: LocalSwarm
    peer: str
    dirs: dict[str, Path]
    """Checkpoint directory by swarm name."""
    servers: dict[str, NodeProcess]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoModels]:
    tmp = tmp_path_factory.mktemp("two-models")
    dirs = {"tiny-llama": save_checkpoint("llama", tmp / "tiny-llama", layers=6),
            "tiny-qwen2": save_checkpoint("qwen2", tmp / "tiny-qwen2", layers=6, seed=1)}
    swarm = LocalSwarm(LocalSwarmConfig.for_tests(tmp))
    try:
        peer = swarm.start_dht().address
        pinned = {"llama-0": ("tiny-llama", "0:3", "100"), "qwen-0": ("tiny-qwen2", "3:6", "5000"),
                  "qwen-1": ("tiny-qwen2", "0:3", "1000")}
        procs = {name: swarm.spawn_server(name, dirs[model], [peer], "--blocks", blocks, "--throughput", speed,
                                          *FAST) for name, (model, blocks, speed) in pinned.items()}
        servers = {name: swarm.wait_serving(proc) for name, proc in procs.items()}
        joiner = swarm.spawn_server("llama-1", dirs["tiny-llama"], [peer], "--num-blocks", "3",
                                    "--throughput", "100", *FAST)
        servers["llama-1"] = swarm.wait_serving(joiner)
    except BaseException:
        swarm.stop_all()
        raise
    yield TwoModels(swarm, peer, dirs, servers)
    swarm.stop_all()


def _blocks(proc: NodeProcess) -> str:
    info = proc.ready()
    return info.blocks if info is not None else ""


def test_a_joining_server_places_itself_by_its_own_models_records(two_models: TwoModels) -> None:
    assert _blocks(two_models.servers["llama-1"]) == "3:6"


def test_two_clients_generate_both_models_at_once(two_models: TwoModels) -> None:
    prompt = torch.randint(1, VOCAB, (1, 7), generator=torch.Generator().manual_seed(0))
    expected = {name: load_reference(path).generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
                for name, path in two_models.dirs.items()}
    assert not torch.equal(*expected.values())  # two different models: a mixed-up route would show
    clients = {name: AutoDistributedModelForCausalLM.from_pretrained(path, [two_models.peer])
               for name, path in two_models.dirs.items()}
    try:
        def generate(name: str) -> tuple[torch.Tensor, float, float]:
            began = time.monotonic()
            out = clients[name].generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
            return out, began, time.monotonic()

        with ThreadPoolExecutor(2) as pool:
            results = dict(zip(clients, pool.map(generate, clients), strict=True))
    finally:
        for client in clients.values():
            client.close()
    for name, (out, _, _) in results.items():
        assert torch.equal(out, expected[name]), name
    (_, a0, a1), (_, b0, b1) = results.values()
    assert a0 < b1 and b0 < a1, "the two generations did not overlap in time"


def test_the_rebalancer_ignores_the_other_models_records(two_models: TwoModels) -> None:
    """Several balance periods (1 s, jittered) pass; llama-1 stays where llama needs it."""
    joiner = two_models.servers["llama-1"]
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        assert _blocks(joiner) == "3:6" and joiner.alive, joiner.log_tail()
        time.sleep(0.5)
    assert "moving" not in joiner.text().lower(), joiner.log_tail()


def test_status_lists_both_models(two_models: TwoModels, capsys: pytest.CaptureFixture[str]) -> None:
    ids = {name: {two_models.servers[f"{kind}-{i}"].ready().server_id for i in (0, 1)}  # type: ignore[union-attr]
           for name, kind in (("tiny-llama", "llama"), ("tiny-qwen2", "qwen"))}

    def shown() -> dict[str, dict[str, object]]:
        peers = (PeerAddress.parse(two_models.peer),)
        assert asyncio.run(status_command.status(peers, None, True, 10.0)) == 0
        return {m["model"]: m for m in json.loads(capsys.readouterr().out)["models"]}

    def both_complete() -> bool:
        models = shown()
        return set(models) == set(ids) and all(
            m["complete"] and {s["server_id"] for s in m["servers"]} == ids[name]  # type: ignore[attr-defined]
            for name, m in models.items())

    wait_until(both_complete, 30.0, "swarm status lists both models, complete, each with its own servers")
    peers = (PeerAddress.parse(two_models.peer),)
    assert asyncio.run(status_command.status(peers, None, False, 10.0)) == 0
    text = capsys.readouterr().out
    assert "tiny-llama: 6 blocks" in text and "tiny-qwen2: 6 blocks" in text
