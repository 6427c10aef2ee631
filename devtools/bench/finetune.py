"""`scripts/bench finetune`: one LoRA training step through a 3-server swarm vs. the same step locally.

Starts a DHT node and three servers of SmolLM2-135M-Instruct (0:10, 10:20, 20:30). The
swarm side trains `client.tuning.TrainableTuning` LoRA factors (q_proj, v_proj, rank 8)
through the servers; the local side trains the very same factors (saved in PEFT format
and loaded with `peft`, so both start equal) on transformers in this process. A step is
forward + backward + AdamW on a batch of random tokens (default 8 x 128). Rounds alternate
the order; the report gives medians, the ratio (target <= 1.3x) and the first step's two
losses (they must agree: the same computation).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from devtools.bench.common import WORKDIR_ENV, progress, quiet_logging
from devtools.bench.stats import Comparison, format_table, rotating_order
from devtools.launcher import LocalSwarm, LocalSwarmConfig, sigterm_as_interrupt
from swarm.records import BlockRange

TARGET_RATIO = 1.3
SPANS = (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory (default: SmolLM2)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, order alternating (default 5)")
    parser.add_argument("--batch", type=int, default=8, help="rows per step (default 8)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per row (default 128)")
    parser.add_argument("--workdir", type=Path, default=os.environ.get(WORKDIR_ENV) or None,
                        help=f"servers' logs and pids file (default: ${WORKDIR_ENV} or a temp dir)")
    return parser.parse_args(argv)


class SwarmTrainer:
    def __init__(self, path: str, peers: list[str]) -> None:
        from client.model import AutoDistributedModelForCausalLM
        from client.tuning import TrainableTuning
        from swarm.model.families import family_class

        self.model = AutoDistributedModelForCausalLM.from_pretrained(path, peers)
        config = copy.deepcopy(self.model.head.config)
        torch.manual_seed(0)
        self.params = TrainableTuning(self.model.head.info, family_class(config)(config), "lora", lora_rank=8,
                                      lora_alpha=16, lora_targets=("q_proj", "v_proj"))
        with torch.no_grad():  # B = 0 would make the first steps' LoRA gradients trivial
            for b in self.params.lora_b.values():
                b.normal_(0.0, 0.01)
        self.optimizer = torch.optim.AdamW(self.params.parameters(), lr=1e-3)

    def step(self, ids: torch.Tensor) -> tuple[float, float]:
        from client.tuning import shifted_lm_loss, tuned_logits

        began = time.perf_counter()
        self.optimizer.zero_grad()
        loss = shifted_lm_loss(tuned_logits(self.model.head, self.model.layers, self.params, ids), ids)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return time.perf_counter() - began, loss.item()


class LocalTrainer:
    def __init__(self, path: str, swarm: SwarmTrainer) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        with tempfile.TemporaryDirectory() as adapter:
            swarm.params.save_adapter(adapter)
            self.model: Any = PeftModel.from_pretrained(base, adapter, is_trainable=True)
        self.model.train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-3)

    def step(self, ids: torch.Tensor) -> tuple[float, float]:
        from client.tuning import shifted_lm_loss

        began = time.perf_counter()
        self.optimizer.zero_grad()
        loss = shifted_lm_loss(self.model(input_ids=ids).logits, ids)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return time.perf_counter() - began, loss.item()


def run(args: argparse.Namespace, path: str, peers: list[str]) -> str:
    swarm = SwarmTrainer(path, peers)
    try:
        local = LocalTrainer(path, swarm)
        trainers: dict[str, Any] = {"swarm": swarm, "local": local}
        vocab = int(swarm.model.head.info.vocab_size)
        ids = torch.randint(0, vocab, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
        first = {name: trainer.step(ids)[1] for name, trainer in trainers.items()}  # also the warm-up
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for number, order in enumerate(rotating_order(args.rounds, list(trainers)), 1):
            for name in order:
                times[name].append(trainers[name].step(ids)[0])
            progress(f"round {number}/{args.rounds}: swarm {times['swarm'][-1]:.2f} s, local {times['local'][-1]:.2f} s")
    finally:
        swarm.model.close()
    row = Comparison(f"training step {args.batch}x{args.tokens}", tuple(times["swarm"]), tuple(times["local"]))
    return "\n".join([
        f"swarm-llm bench finetune: {Path(path).name}, float32, LoRA r=8 on q_proj and v_proj, AdamW; "
        f"forward + backward + optimizer step on {args.batch}x{args.tokens} tokens; {args.rounds} rounds, "
        f"order alternating; medians",
        f"swarm: 3 server processes on 127.0.0.1 ({', '.join(map(str, SPANS))}); local: transformers + peft "
        f"in this process; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        "",
        format_table([row], "swarm", "local", TARGET_RATIO, row.name),
        "",
        f"first step's loss: swarm {first['swarm']:.6f}, local {first['local']:.6f} "
        f"(same factors, same batch: {'agree' if abs(first['swarm'] - first['local']) < 1e-3 else 'DIFFER'})",
    ])


def main(argv: list[str] | None = None) -> int:
    from swarm.default_model import resolve_model

    args = parse_args(argv)
    quiet_logging()
    path = resolve_model(args.model)
    try:
        with sigterm_as_interrupt():
            progress("starting a DHT node and 3 servers on 127.0.0.1")
            with LocalSwarm(LocalSwarmConfig(path, SPANS, workdir=args.workdir,
                                             server_args=("--drain-grace", "5"))) as swarm:
                progress(f"swarm ready (logs in {swarm.workdir})")
                print(run(args, path, swarm.initial_peers))
    except KeyboardInterrupt:
        progress("interrupted; every process the bench started is stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
