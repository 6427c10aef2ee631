"""`scripts/finetune`: LoRA-tune SmolLM2 through a local 3-server swarm on a checkable task.

Starts a DHT node and three servers of SmolLM2-135M-Instruct (blocks 0:10, 10:20, 20:30),
measures the held-out loss and exact-match accuracy of the untuned model, trains LoRA
factors on every projection through the swarm (AdamW, gradient clipping; a progress bar
with loss and tokens/s), measures again, and writes to --out: the adapter in PEFT format
(adapter_config.json + adapter_model.safetensors), the loss curve (loss.png) and the
figures (results.json). The task: `devtools.finetune.task`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from client.model import AutoDistributedModelForCausalLM, DistributedModelForCausalLM
from client.tuning import TrainableTuning, shifted_lm_loss, tuned_greedy, tuned_logits
from devtools.finetune import task
from devtools.launcher import LocalSwarm, LocalSwarmConfig
from swarm.model.families import family_class
from swarm.progress import progress_bar
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Evaluation:
    loss: float
    """Mean cross-entropy on the held-out answers' tokens."""
    accuracy: float
    """Share of held-out prompts whose greedy answer is exactly the sum."""


@dataclass(frozen=True)
class Results:
    before: Evaluation
    after: Evaluation
    losses: list[float]
    seconds_per_step: float
    tokens_per_s: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory (default: SmolLM2)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (default 40)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per step (default 8)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8; alpha = 2 x rank)")
    parser.add_argument("--eval-examples", type=int, default=24, help="held-out prompts (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="data and initialisation seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("finetune-out"), help="where results go")
    parser.add_argument("--workdir", type=Path, help="the processes' logs (default: a temp dir)")
    return parser.parse_args(argv)


def evaluate(model: DistributedModelForCausalLM, params: TrainableTuning, tokenizer: object,
             held_out: list[task.Example]) -> Evaluation:
    with torch.no_grad():
        ids, mask, labels = task.batch(tokenizer, held_out)
        loss = shifted_lm_loss(tuned_logits(model.head, model.layers, params, ids, mask), labels).item()
    newline = tokenizer("\n").input_ids  # type: ignore[operator]
    correct = 0
    for item in held_out:
        prompt = torch.tensor([tokenizer(item.prompt).input_ids])  # type: ignore[operator]
        out = tuned_greedy(model.head, model.layers, params, prompt, 6, stop_ids=newline)
        correct += task.is_correct(item, tokenizer.decode(out[0, prompt.shape[1]:]))  # type: ignore[attr-defined]
    return Evaluation(loss, correct / len(held_out))


def train(model: DistributedModelForCausalLM, params: TrainableTuning, tokenizer: object,
          data: list[task.Example], args: argparse.Namespace) -> tuple[list[float], float, float]:
    """Losses per step, seconds per step, tokens per second (real tokens through the swarm)."""
    optimizer = torch.optim.AdamW(params.parameters(), lr=args.lr)
    losses, tokens, began = [], 0, time.monotonic()
    bar = progress_bar(range(args.steps), desc="training through the swarm", unit="step")
    for step in bar:
        ids, mask, labels = task.batch(tokenizer, data[step * args.batch_size : (step + 1) * args.batch_size])
        optimizer.zero_grad()
        loss = shifted_lm_loss(tuned_logits(model.head, model.layers, params, ids, mask), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        tokens += int(mask.sum())
        bar.set_postfix_str(f"loss {loss.item():.3f}, {tokens / (time.monotonic() - began):.0f} tokens/s")
    bar.close()
    seconds = time.monotonic() - began
    return losses, seconds / max(args.steps, 1), tokens / seconds


def plot(losses: list[float], before: Evaluation, after: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 3.5))
    axes.plot(range(1, len(losses) + 1), losses, label="training batch loss")
    axes.axhline(before.loss, color="grey", linestyle="--", label=f"held-out before ({before.loss:.2f})")
    axes.axhline(after.loss, color="green", linestyle="--", label=f"held-out after ({after.loss:.2f})")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy")
    axes.set_title("LoRA through a 3-server swarm: SmolLM2-135M, addition")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def run(args: argparse.Namespace, model_dir: str) -> Results:
    from transformers import AutoTokenizer

    spans = (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30))
    with LocalSwarm(LocalSwarmConfig(model_dir, spans, workdir=args.workdir)) as swarm:
        model = AutoDistributedModelForCausalLM.from_pretrained(model_dir, swarm.initial_peers)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            config = copy.deepcopy(model.head.config)
            torch.manual_seed(args.seed)
            params = TrainableTuning(model.head.info, family_class(config)(config), "lora", lora_rank=args.rank,
                                     lora_alpha=2 * args.rank, lora_targets=TARGETS)
            data = task.examples(args.seed, args.steps * args.batch_size)
            held_out = task.examples(args.seed + 1, args.eval_examples,
                                     exclude=frozenset(task.operands(e) for e in data))
            before = evaluate(model, params, tokenizer, held_out)
            logger.info("before: held-out loss %.3f, exact match %.0f%%", before.loss, 100 * before.accuracy)
            losses, per_step, tokens_per_s = train(model, params, tokenizer, data, args)
            after = evaluate(model, params, tokenizer, held_out)
            params.save_adapter(args.out, base_model=model_dir)
        finally:
            model.close()
    results = Results(before, after, losses, per_step, tokens_per_s)
    plot(losses, before, after, args.out / "loss.png")
    (args.out / "results.json").write_text(json.dumps(asdict(results), indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    from swarm.default_model import resolve_model
    from swarm.logs import setup_logging

    args = parse_args(argv)
    setup_logging()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args, resolve_model(args.model))
    if not all(math.isfinite(x) for x in results.losses):
        logger.error("the loss went non-finite: %s", results.losses)
        return 1
    sys.stdout.write(f"held-out loss {results.before.loss:.3f} -> {results.after.loss:.3f}; exact match "
                     f"{100 * results.before.accuracy:.0f}% -> {100 * results.after.accuracy:.0f}% over "
                     f"{args.eval_examples} prompts; {results.seconds_per_step:.2f} s per step "
                     f"({results.tokens_per_s:.0f} tokens/s); adapter, loss.png and results.json in {args.out}\n")
    return 0
