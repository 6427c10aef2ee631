"""Chaos: generations while servers are SIGKILLed and restarted (issue 10, the chaos test).

Two replicas of each block range (0:3 and 3:6, four server processes, each with its own
--identity so a restarted server comes back under the same id and must be un-banned when
it answers again). A background thread kills one server with SIGKILL every 1-3 s and
restarts it, never while a replica of its range is down or still loading (a restart
takes ~10-20 s on 2 cores, which bounds the kill rate). Meanwhile 50 short greedy
generations run: every one must complete without a user-level retry and equal local
greedy. The worst failover recovery time (the sessions' `recoveries`) is printed; the
target is < 0.5 s, the assertion is looser for this 2-core machine.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
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
NEW_TOKENS = 16
SPANS = ["0:3", "0:3", "3:6", "3:6"]
FLAGS = ("--cache-tokens", "4096", "--update-period", "1", "--metrics-port", "0")
WORST_RECOVERY_BOUND_S = 5.0
"""Asserted bound on one failover (the target is 0.5 s; a restarting neighbour loads a model
on the same 2 cores)."""


class Killer(threading.Thread):
    """Every 1-3 s, SIGKILLs one serving server whose replicas all serve (so every block keeps
    a live server) and spawns its replacement with the same identity (not waiting for it)."""

    def __init__(self, servers: list[NodeProcess], spawn: Callable[[int], NodeProcess], seed: int = 0) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.spawn = spawn
        self.stop_event = threading.Event()
        self.kills = 0
        self.rng = random.Random(seed)
        self.errors: list[BaseException] = []
        self.route = ""
        """The live session's route (set by the test): servers on it are killed first, mid-session."""

    def _serving(self, index: int) -> bool:
        server = self.servers[index]
        return server.alive and (server.info is not None or server.check_ready())

    def run(self) -> None:
        deadline = time.monotonic() + 600.0  # bounded even if the generations hang
        try:
            while not self.stop_event.wait(self.rng.uniform(1.0, 3.0)) and time.monotonic() < deadline:
                for i, server in enumerate(self.servers):
                    if not server.alive:  # a replacement that died while starting: try again
                        self.servers[i] = self.spawn(i)
                victims = [i for i in range(len(SPANS))
                           if all(self._serving(j) for j in range(len(SPANS)) if SPANS[j] == SPANS[i])]
                if not victims:
                    continue  # a replacement is still loading: wait, never leave a block without servers
                in_use = [i for i in victims if self.servers[i].address and self.servers[i].address in self.route]
                index = self.rng.choice(in_use or victims)
                self.servers[index].popen.send_signal(signal.SIGKILL)
                self.servers[index].popen.wait(10)
                self.kills += 1
                self.servers[index] = self.spawn(index)
        except BaseException as error:  # reported by the test
            self.errors.append(error)


def test_generations_survive_servers_killed_and_restarted(tmp_path: Path) -> None:
    identities = [tmp_path / f"identity-{i}.key" for i in range(len(SPANS))]
    running = start_swarm(tmp_path, "llama", SPANS[:1], *FLAGS, "--identity", str(identities[0]))
    swarm = running.swarm
    try:
        def spawn(i: int) -> NodeProcess:
            return swarm.spawn_server(f"chaos-{i}-{time.monotonic_ns()}", running.model_dir, running.peers,
                                      "--blocks", SPANS[i], "--throughput", "100", *FLAGS,
                                      "--identity", str(identities[i]))

        servers = [running.servers[0]] + [swarm.wait_serving(spawn(i)) for i in range(1, len(SPANS))]
        reference = AutoModelForCausalLM.from_pretrained(running.model_dir, dtype=torch.float32).eval()
        model = AutoDistributedModelForCausalLM.from_pretrained(
            running.model_dir, running.peers,
            config=ClientConfig(initial_peers=(), step_timeout=5.0, push_allowance=1.0, max_retries=16,
                                ban_base_s=1.0, verify_fraction=0.0))
        killer = Killer(servers, spawn)
        recoveries: list[float] = []
        try:
            killer.start()
            n = 0
            # at least GENERATIONS, and on until the killer has struck 3 times (a fast client can
            # finish 50 before a restarting server lets it kill again) and one kill has hit a live
            # session (kills can all land between sessions), at most 4x as many
            while n < GENERATIONS or ((killer.kills < 3 or not recoveries) and n < 4 * GENERATIONS):
                n += 1
                ids = torch.randint(1, VOCAB, (1, 4), generator=torch.Generator().manual_seed(n))
                with model.inference_session(max_length=ids.shape[1] + NEW_TOKENS) as session:
                    killer.route = session.route
                    out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
                    recoveries.extend(session.recoveries)
                assert torch.equal(out, reference.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)), n
        finally:
            killer.stop_event.set()
            killer.join(60)
            model.close()
        worst = max(recoveries, default=0.0)
        print(f"\nchaos: {n} generations, {killer.kills} kills, {len(recoveries)} failovers, "
              f"worst recovery {worst:.3f} s (target < 0.5 s)")
        assert not killer.errors, killer.errors
        assert killer.kills >= 3, "too few kills for a chaos test"
        assert recoveries, "no kill hit a live session: nothing was failed over"
        assert worst < WORST_RECOVERY_BOUND_S
    finally:
        swarm.stop_all()
