"""Chaos: generations while servers are SIGKILLed and restarted (issue 10, the chaos test).

Two replicas of each block range (0:3 and 3:6, four server processes, each with its own
--identity so a restarted server comes back under the same id and must be un-banned when
it answers again). A background thread kills one server at a time with SIGKILL every 1-3 s
and restarts it, never both replicas of one range at once. Meanwhile 50 short greedy
generations run: every one must complete without a user-level retry and equal local
greedy. The worst failover recovery time (the sessions' `recoveries`) is printed; the
target is < 0.5 s, the assertion is looser for this 2-core machine.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from client.config import ClientConfig
from client.model import AutoDistributedModelForCausalLM
from devtools.launcher import NodeProcess
from tests.integration.conftest import start_swarm
from tests.integration.slicing_models import VOCAB

pytestmark = pytest.mark.slow

GENERATIONS = 50
NEW_TOKENS = 4
SPANS = ["0:3", "0:3", "3:6", "3:6"]
FLAGS = ("--cache-tokens", "4096", "--update-period", "1", "--metrics-port", "0")
WORST_RECOVERY_BOUND_S = 5.0
"""Asserted bound on one failover (the target is 0.5 s; a restarting neighbour loads a model
on the same 2 cores)."""


class Killer(threading.Thread):
    """Kills one server every 1-3 s (SIGKILL) and restarts it with the same identity."""

    def __init__(self, restart: dict[int, object], servers: list[NodeProcess], start_one: object,
                 seed: int = 0) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.start_one = start_one
        self.stop_event = threading.Event()
        self.kills = 0
        self.rng = random.Random(seed)
        self.errors: list[BaseException] = []

    def run(self) -> None:
        deadline = time.monotonic() + 600.0  # bounded even if the generations hang
        try:
            while not self.stop_event.wait(self.rng.uniform(1.0, 3.0)) and time.monotonic() < deadline:
                index = self.rng.randrange(len(self.servers))
                self.servers[index].popen.send_signal(signal.SIGKILL)
                self.servers[index].popen.wait(10)
                self.kills += 1
                self.servers[index] = self.start_one(index)  # type: ignore[operator]
        except BaseException as error:  # reported by the test
            self.errors.append(error)


def test_generations_survive_servers_killed_and_restarted(tmp_path: Path) -> None:
    identities = [tmp_path / f"identity-{i}.key" for i in range(len(SPANS))]
    running = start_swarm(tmp_path, "llama", SPANS[:1], *FLAGS, "--identity", str(identities[0]))
    swarm = running.swarm
    try:
        def start_one(i: int) -> NodeProcess:
            return swarm.start_server(f"chaos-{i}-{time.monotonic_ns()}", running.model_dir, running.peers,
                                      "--blocks", SPANS[i], "--throughput", "100", *FLAGS,
                                      "--identity", str(identities[i]))

        servers = [running.servers[0]] + [start_one(i) for i in range(1, len(SPANS))]
        reference = AutoModelForCausalLM.from_pretrained(running.model_dir, dtype=torch.float32).eval()
        model = AutoDistributedModelForCausalLM.from_pretrained(
            running.model_dir, running.peers,
            config=ClientConfig(initial_peers=(), step_timeout=5.0, push_allowance=1.0, max_retries=16,
                                ban_base_s=1.0, verify_fraction=0.0))
        killer = Killer({}, servers, start_one)
        recoveries: list[float] = []
        try:
            killer.start()
            for n in range(GENERATIONS):
                ids = torch.randint(1, VOCAB, (1, 4), generator=torch.Generator().manual_seed(n))
                with model.inference_session(max_length=ids.shape[1] + NEW_TOKENS) as session:
                    out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
                    recoveries.extend(session.recoveries)
                assert torch.equal(out, reference.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)), n
        finally:
            killer.stop_event.set()
            killer.join(60)
            model.close()
        worst = max(recoveries, default=0.0)
        print(f"\nchaos: {GENERATIONS} generations, {killer.kills} kills, {len(recoveries)} failovers, "
              f"worst recovery {worst:.3f} s (target < 0.5 s)")
        assert not killer.errors, killer.errors
        assert killer.kills >= 5, "too few kills for a chaos test"
        assert worst < WORST_RECOVERY_BOUND_S
    finally:
        swarm.stop_all()
