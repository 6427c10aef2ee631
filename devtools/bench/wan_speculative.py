"""`scripts/bench wan --speculative [N]`: speculative vs plain greedy decoding over WAN links.

The same proxied swarm as `scripts/bench wan` (three servers, each behind a one-way
delay proxy, chaining on), and one prompt whose answer copies from it (extraction: "list
every email address in this text"; SmolLM2-135M answers by copying the text, where it
rewrites code edits rather than copying them). Plain decoding (`speculative=0`) and
speculative decoding (drafts of up to N tokens by prompt lookup) alternate for a few
rounds; each call is timed whole (prefill included, the same in both), and the run
prints both tokens/s, their ratio, whether the outputs are identical token for token,
and the acceptance rate. The issue's target: speculative >= 2x plain at 20 ms.

The default model here is SmolLM2 (a random-weight model copies nothing); the prompt
goes through its chat template.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from client.config import ClientConfig
from client.model import AutoDistributedModelForCausalLM, DistributedModelForCausalLM
from client.routing import RoutingConfig

logger = logging.getLogger(__name__)

TARGET_SPEEDUP = 2.0
PROMPT = (
    "List every email address in this text, one per line.\n\n"
    "Contact alice.smith@example.com for sales, bob.jones@example.org for support, carol.white@example.net "
    "for billing, dave.brown@example.com for press, erin.black@example.org for hiring, frank.green@example.net "
    "for legal, grace.hall@example.com for events and henry.king@example.org for partnerships."
)


@dataclass(frozen=True)
class SpeculativeResult:
    servers: int
    delay_s: float
    tokens: int
    rounds: int
    draft_tokens: int
    model: str
    plain_tokens_per_s: float
    speculative_tokens_per_s: float
    acceptance_rate: float
    tokens_per_step: float
    identical: bool

    @property
    def speedup(self) -> float:
        return self.speculative_tokens_per_s / self.plain_tokens_per_s if self.plain_tokens_per_s else float("inf")


def format_result(r: SpeculativeResult) -> str:
    verdict = "met" if r.speedup >= TARGET_SPEEDUP and r.identical else "NOT met"
    return "\n".join([
        f"{r.servers} servers, one-way delay {r.delay_s * 1e3:.1f} ms per hop, chained, {r.tokens} tokens x "
        f"{r.rounds} rounds, model {r.model}, drafts of up to {r.draft_tokens} tokens (prompt lookup)",
        f"{'mode':<12} {'tokens/s':>9}",
        f"{'plain':<12} {r.plain_tokens_per_s:>9.2f}",
        f"{'speculative':<12} {r.speculative_tokens_per_s:>9.2f}",
        f"speedup {r.speedup:.2f}x, acceptance rate {100 * r.acceptance_rate:.0f}%, "
        f"{r.tokens_per_step:.2f} tokens per step, outputs identical: {'yes' if r.identical else 'NO'}",
        f"target speculative >= {TARGET_SPEEDUP:.1f} x plain with identical output: {verdict}",
    ])


def _prompt_ids(model_dir: str) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    return torch.as_tensor(ids)


def _timed(model: DistributedModelForCausalLM, prompt: torch.Tensor, tokens: int, drafts: int
           ) -> tuple[float, torch.Tensor]:
    began = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=tokens, do_sample=False, speculative=drafts)
    return time.perf_counter() - began, out


def run_speculative(model_arg: str | None, servers: int, delay_s: float, tokens: int, rounds: int,
                    drafts: int, workdir: Path | None) -> SpeculativeResult:
    """Starts the proxied swarm with the delay, alternates plain and speculative calls, stops all."""
    from devtools.bench.proxied_swarm import proxied_swarm
    from devtools.bench.wan import split_blocks
    from swarm.default_model import resolve_model
    from swarm.model_names import model_name_of
    from transformers import AutoConfig

    with contextlib.ExitStack() as stack:
        work = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swarm-wan-spec-")))
        model_dir = resolve_model(model_arg or "default")
        spans = split_blocks(AutoConfig.from_pretrained(model_dir).num_hidden_layers, servers)
        swarm, _links = stack.enter_context(proxied_swarm(model_dir, spans, delay_s, work))
        client = AutoDistributedModelForCausalLM.from_pretrained(
            model_dir, swarm.initial_peers, model_name=model_name_of(model_dir),
            config=ClientConfig(initial_peers=(), routing=RoutingConfig(chained=True)))
        stack.callback(client.close)
        prompt = _prompt_ids(model_dir)
        _timed(client, prompt, 2, 0)  # connects the channels; not counted
        seconds: dict[int, list[float]] = {0: [], drafts: []}
        outputs: dict[int, list[torch.Tensor]] = {0: [], drafts: []}
        rates, per_step = [], []
        for round_ in range(rounds):
            for mode in ((0, drafts) if round_ % 2 == 0 else (drafts, 0)):
                elapsed, out = _timed(client, prompt, tokens, mode)
                seconds[mode].append(elapsed)
                outputs[mode].append(out)
                stats = client.speculative_stats
                if stats is not None:
                    rates.append(stats.acceptance_rate)
                    per_step.append(stats.tokens_per_step)
                logger.info("round %d, speculative=%d: %d tokens in %.2f s", round_ + 1, mode,
                            out.shape[1] - prompt.shape[1], elapsed)
        reference = outputs[0][0]
        identical = all(torch.equal(o, reference) for runs in outputs.values() for o in runs)
        new = reference.shape[1] - prompt.shape[1]
        return SpeculativeResult(servers, delay_s, tokens, rounds, drafts, model_name_of(model_dir),
                                 new / statistics.median(seconds[0]), new / statistics.median(seconds[drafts]),
                                 statistics.mean(rates), statistics.mean(per_step), identical)
