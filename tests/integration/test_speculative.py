"""Speculative decoding through real servers: identical greedy output, fewer round trips,
rollback surviving a failover.

One swarm of `swarm-node` processes on 127.0.0.1 serves a tiny random Llama (6 blocks) with
two replicas of each range, so a route is 3 servers and a killed one has a stand-in. A
random tiny model's greedy text falls into loops, which prompt lookup drafts: steps
carry drafts, some are accepted and some rejected (the caches roll back), and the output
must still equal transformers' greedy run on the same checkpoint token for token.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from client.config import ClientConfig
from client.model import AutoDistributedModelForCausalLM, DistributedModelForCausalLM
from client.routing import RoutingConfig
from tests.integration.conftest import RunningSwarm, start_swarm
from tests.integration.slicing_models import VOCAB

NEW_TOKENS = 40


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    running = start_swarm(tmp_path_factory.mktemp("speculative"), "llama",
                          ["0:2", "0:2", "2:4", "2:4", "4:6", "4:6"], "--push-timeout", "1")
    yield running
    running.swarm.stop_all()


@pytest.fixture(scope="module")
def reference(replicated: RunningSwarm) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(replicated.model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model(replicated: RunningSwarm) -> Iterator[DistributedModelForCausalLM]:
    config = ClientConfig(initial_peers=(), step_timeout=5.0, push_allowance=2.0,
                          routing=replace(RoutingConfig(), chained=True))
    client = AutoDistributedModelForCausalLM.from_pretrained(replicated.model_dir, replicated.peers, config=config)
    yield client
    client.close()


def _prompt(seed: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (1, 8), generator=torch.Generator().manual_seed(seed))


class _AfterTokens:
    """A streamer that runs `action` once `count` new tokens have come out."""

    def __init__(self, count: int, action: Callable[[], None]) -> None:
        self.count, self.action, self.seen = count, action, -1

    def put(self, value: torch.Tensor) -> None:
        self.seen += 1  # the first put is the prompt; then one put per token
        if self.seen == self.count:
            self.action()

    def end(self) -> None:
        pass


@pytest.mark.slow
def test_speculative_greedy_equals_plain_with_fewer_steps(model: DistributedModelForCausalLM,
                                                          reference: PreTrainedModel) -> None:
    ids = _prompt(3)
    expected = reference.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    plain = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, speculative=0)
    assert model.speculative_stats is None
    fast = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, speculative=6)
    stats = model.speculative_stats
    assert torch.equal(plain, expected) and torch.equal(fast, expected)
    assert stats is not None and stats.tokens == NEW_TOKENS
    assert stats.steps < NEW_TOKENS and stats.accepted == NEW_TOKENS - stats.steps
    assert 0 < stats.accepted < stats.drafted  # drafts kept and drafts rolled back
    # continued in one session: two calls equal one call on the whole text
    with model.inference_session(max_length=8 + 2 * 12 + 4) as session:
        first = model.generate(ids, max_new_tokens=12, do_sample=False, speculative="auto")
        second = model.generate(torch.tensor([[5, 9, 5, 9]]), max_new_tokens=12, do_sample=False, speculative=4)
        assert model.speculative_stats is not None
        assert session.position == first.shape[1] + second.shape[1] - 1
    whole = torch.cat([first, second], dim=1)
    assert torch.equal(whole, reference.generate(whole[:, :-12], max_new_tokens=12, do_sample=False))


@pytest.mark.slow
def test_speculative_sampling_runs_and_reports(model: DistributedModelForCausalLM) -> None:
    torch.manual_seed(0)
    out = model.generate(_prompt(4), max_new_tokens=16, do_sample=True, top_k=4, speculative=4)
    stats = model.speculative_stats
    assert out.shape == (1, 24) and bool((out >= 0).all() and (out < VOCAB).all())
    assert stats is not None and stats.tokens == 16 and stats.drafted > 0


@pytest.mark.slow
def test_speculative_greedy_survives_a_killed_server(replicated: RunningSwarm, model: DistributedModelForCausalLM,
                                                     reference: PreTrainedModel) -> None:
    ids = _prompt(5)
    expected = reference.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    with model.inference_session(max_length=ids.shape[1] + NEW_TOKENS) as session:
        def kill_middle() -> None:
            hop = session.route.split(" -> ")[1]
            address = hop.split("@")[1].split("[")[0]
            victim = next(p for p in replicated.servers if p.address == address)
            os.kill(victim.popen.pid, signal.SIGKILL)

        out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, speculative=6,
                             streamer=_AfterTokens(NEW_TOKENS // 2, kill_middle))
        recoveries = session.recoveries
    stats = model.speculative_stats
    assert torch.equal(out, expected)
    assert len(recoveries) == 1, recoveries
    assert stats is not None and 0 < stats.accepted < stats.drafted
