"""Acceptance of drafted tokens: greedy exactness, and the rejection-sampling rule keeping
the target model's distribution (a statistical test on a tiny random Llama).

The statistical test drafts 2 tokens per step, draws N = 8000 samples of the first two
emitted tokens and compares their empirical joint distribution with the exact one,
p(a) * p(b | a), by total variation distance. The draft model is the target with its
weights perturbed (TV(p, q) ~0.5 on the first token); top-k 4 on both models leaves at
most 16 cells. The sampling noise of the TV estimate at this N: 0.011-0.020 seen over
seeds, so the tolerance is TV <= 0.03. A plausible wrong rule (a rejection resampled from
p instead of the residual) goes through the same check and must fail it with a margin
(seen: TV 0.22 with the draft model's q, 0.065-0.072 with one-hot drafts).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import AutoModelForCausalLM

from client.speculative_accept import greedy_accept, rejection_sample
from tests.integration.slicing_models import VOCAB, make_config

SAMPLES = 8000
TOLERANCE = 0.03
TOP_K = 4
NOISE = 0.2
Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Generator], list[int]]


def test_greedy_keeps_the_argmax_prefix() -> None:
    scores = torch.full((4, 10), -1.0)
    for row, best in enumerate([3, 5, 9, 1]):
        scores[row, best] = 1.0
    assert greedy_accept(torch.tensor([3, 5, 9]), scores) == [3, 5, 9, 1]  # all kept + the bonus
    assert greedy_accept(torch.tensor([3, 6, 9]), scores) == [3, 5]  # first mismatch replaced
    assert greedy_accept(torch.tensor([4, 5, 9]), scores) == [3]
    assert greedy_accept(torch.tensor([], dtype=torch.long), scores[:1]) == [3]  # no draft: plain step
    with pytest.raises(ValueError, match="k\\+1"):
        greedy_accept(torch.tensor([3, 5]), scores)


class Tables:
    """Top-k next-token distributions of a target and a draft model after a fixed prompt,
    after one more token (any) and after two (the second any)."""

    def __init__(self) -> None:
        self.prompt = torch.tensor([11, 42, 7, 99, 3])
        torch.manual_seed(0)
        target = AutoModelForCausalLM.from_config(make_config("llama", layers=2)).eval()
        draft = AutoModelForCausalLM.from_config(make_config("llama", layers=2)).eval()
        with torch.no_grad():  # the draft model: the target's weights, perturbed (a cheap imitation)
            for mine, theirs in zip(draft.parameters(), target.parameters(), strict=True):
                mine.copy_(theirs + NOISE * theirs.std() * torch.randn_like(theirs))
        self.draft = self._tables(draft, None)
        self.target = self._tables(target, self.draft[0])

    def _tables(self, model: torch.nn.Module, seconds: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p(. | prompt) [V], p(. | prompt a) [V, V], p(. | prompt a b) [V, V, V] (filled for
        the a the draft can propose: `seconds` > 0; all a when None)."""
        one = torch.cat([self.prompt.expand(VOCAB, -1), torch.arange(VOCAB)[:, None]], dim=1)
        firsts = torch.arange(VOCAB) if seconds is None else seconds.nonzero()[:, 0]
        two = torch.cat([one[firsts].repeat_interleave(VOCAB, 0), torch.arange(VOCAB).repeat(len(firsts))[:, None]],
                        dim=1)
        with torch.inference_mode():
            p0, p1, p2 = (_top_k_probs(model(input_ids=ids).logits[:, -1]) for ids in (self.prompt[None], one, two))
        table = torch.zeros(VOCAB, VOCAB, VOCAB)
        table[firsts] = p2.view(len(firsts), VOCAB, VOCAB)
        return p0[0], p1, table

    def exact_joint(self) -> torch.Tensor:
        p0, p1, _ = self.target
        return p0[:, None] * p1

    def sample_pairs(self, rule: Rule, drafter: str, generator: torch.Generator) -> torch.Tensor:
        """Counts [V, V] of the first two tokens emitted, drafting 2 tokens per step."""
        p0, p1, p2 = self.target
        q0, q1, _ = self.draft
        counts = torch.zeros(VOCAB, VOCAB)
        for _ in range(SAMPLES):
            x0 = int(torch.multinomial(q0, 1, generator=generator))
            x1 = int(torch.multinomial(q1[x0], 1, generator=generator))
            q = torch.stack([q0, q1[x0]]) if drafter == "model" else None
            out = rule(torch.tensor([x0, x1]), torch.stack([p0, p1[x0], p2[x0, x1]]), q, generator)
            second = out[1] if len(out) > 1 else int(torch.multinomial(p1[out[0]], 1, generator=generator))
            counts[out[0], second] += 1
        return counts


def _top_k_probs(logits: torch.Tensor) -> torch.Tensor:
    kept = logits.topk(TOP_K, dim=-1)
    masked = torch.full_like(logits, float("-inf")).scatter(-1, kept.indices, kept.values)
    return torch.softmax(masked, dim=-1)


def _residual_from_p(draft: torch.Tensor, probs: torch.Tensor, q: torch.Tensor | None,
                     generator: torch.Generator) -> list[int]:
    """Wrong: accepts with min(1, p/q) but resamples a rejection from p itself."""
    for j, token in enumerate(draft.tolist()):
        q_token = 1.0 if q is None else float(q[j, token])
        if float(torch.rand((), generator=generator)) >= min(1.0, float(probs[j, token]) / q_token):
            return [*draft[:j].tolist(), int(torch.multinomial(probs[j], 1, generator=generator))]
    return [*draft.tolist(), int(torch.multinomial(probs[-1], 1, generator=generator))]


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables()


def _tv(tables: Tables, rule: Rule, drafter: str, seed: int) -> float:
    counts = tables.sample_pairs(rule, drafter, torch.Generator().manual_seed(seed))
    return 0.5 * float((counts / SAMPLES - tables.exact_joint()).abs().sum())


@pytest.mark.slow
@pytest.mark.parametrize("drafter", ["model", "lookup"])
def test_rejection_sampling_keeps_the_target_distribution(tables: Tables, drafter: str) -> None:
    p0, q0 = tables.target[0], tables.draft[0]
    assert 0.3 < 0.5 * float((p0 - q0).abs().sum()) < 0.7  # q differs from p, yet overlaps it
    tv = _tv(tables, rejection_sample, drafter, seed=1)
    assert tv <= TOLERANCE, f"TV distance {tv:.4f} > {TOLERANCE}"
    off = _tv(tables, _residual_from_p, drafter, seed=1)
    assert off > 1.5 * TOLERANCE, f"a wrong rule passes the check too: TV {off:.4f}"
