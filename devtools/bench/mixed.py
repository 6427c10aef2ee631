"""`scripts/bench mixed`: generating clients next to a training client on the same server.

A swarm serves people chatting (inference steps: short, someone waits for every token)
and people fine-tuning (Forward/Backward passes over whole batches: long). This bench
starts three loopback swarms of the same model, each a DHT node and one server of all
the blocks, that differ only in how the server's compute thread orders its work:

- priority (the default: `--scheduling priority --batch-share 0.2`): inference steps go
  first, a pass is queued one block at a time, and batch work keeps a least share of a
  busy thread, so a step waits at most for one block of someone's pass and training
  still moves while clients decode;
- strict (`--batch-share 0`): the same, but batch work only runs when no step waits;
- fifo (`--scheduling fifo`): one queue in arrival order, a whole pass per task.

In rounds, rotating which swarm goes first, it times on each swarm:

- `--decoders` clients decoding greedily at once, alone (per-token latency, batch 1);
- the same decoding while a training client runs `--train-passes` forward + backward
  passes of a `--train-batch` x `--train-tokens` batch through `model.layers` (the Forward
  and Backward RPCs); decoding runs for as long as the training does, so both figures are
  taken under contention: per-token latency and seconds per training pass.

It prints medians over rounds and the ratios of priority to fifo and to strict, and
checks that all decoding produced the same greedy tokens. Progress goes to stderr, the
report to stdout (--json: one JSON object).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from client.model import DistributedModelForCausalLM
from devtools.bench.common import WORKDIR_ENV, chat_ids, progress, quiet_logging
from devtools.bench.stats import Comparison, format_table, per_token, rotating_order
from devtools.bench.workloads import DecodeRun, SwarmContender
from devtools.launcher import LocalSwarm, LocalSwarmConfig, LocalSwarmError, sigterm_as_interrupt
from node.scheduler import DEFAULT_BATCH_SHARE
from swarm.records import BlockRange


SERVER_ARGS: dict[str, tuple[str, ...]] = {
    "priority": ("--scheduling", "priority"),
    "strict": ("--scheduling", "priority", "--batch-share", "0"),
    "fifo": ("--scheduling", "fifo"),
}
"""The compared swarms: each one server with these extra arguments."""
DEFAULT_PROMPT = "Tell me about the history of Paris."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench mixed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory (default: SmolLM2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, order rotating (default 3)")
    parser.add_argument("--decoders", type=int, default=2, help="clients decoding at once (default 2)")
    parser.add_argument("--tokens", type=int, default=16, help="tokens each decodes alone per round (default 16)")
    parser.add_argument("--train-batch", type=int, default=1, help="training batch rows (default 1)")
    parser.add_argument("--train-tokens", type=int, default=128, help="training sequence length (default 128)")
    parser.add_argument("--train-passes", type=int, default=2,
                        help="forward + backward passes per round under load (default 2)")
    parser.add_argument("--max-loaded-tokens", type=int, default=400,
                        help="most tokens a client decodes next to training; a swarm that starves the training "
                             "stops there (default 400; the servers' cache holds 8192 tokens in all)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message, chat template applied")
    parser.add_argument("--workdir", type=Path, default=os.environ.get(WORKDIR_ENV) or None,
                        help=f"servers' logs and pids files (default: ${WORKDIR_ENV} or a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("rounds", "decoders", "tokens", "train_batch", "train_tokens", "train_passes", "max_loaded_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


class Trainer:
    """A training client's loop on a background thread: forward + backward passes through the servers."""

    def __init__(self, model: DistributedModelForCausalLM, input_ids: torch.Tensor, passes: int) -> None:
        self.model, self.input_ids, self.passes = model, input_ids, passes
        self.done = threading.Event()
        self.seconds = 0.0
        self.error: BaseException | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._train, name="bench-trainer", daemon=True)

    def one_pass(self) -> None:
        hidden = self.model.head.embed(self.input_ids).detach().requires_grad_(True)
        self.model.layers(hidden).pow(2).mean().backward()
        if hidden.grad is None or not torch.isfinite(hidden.grad).all():
            raise RuntimeError("the training pass produced no finite gradient")

    def _train(self) -> None:
        began = time.perf_counter()
        try:
            for _ in range(self.passes):
                if self._cancelled.is_set():
                    break
                self.one_pass()
        except BaseException as error:  # reported by the caller's thread
            self.error = error
        finally:
            self.seconds = time.perf_counter() - began
            self.done.set()

    @contextlib.contextmanager
    def running(self) -> Iterator[Trainer]:
        self._thread.start()
        try:
            yield self
        except BaseException:
            self._cancelled.set()  # e.g. Ctrl-C: stop after the pass under way
            raise
        finally:
            self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"the training client failed: {self.error}") from self.error


def decode_together(decoders: list[SwarmContender], prompt_ids: torch.Tensor, steps: int,
                    until: threading.Event | None = None) -> list[DecodeRun]:
    """Every decoder decodes at once, each on its own thread (as separate users would).

    They stop early once `until` is set, and all of them after their current step when this
    thread is interrupted.
    """
    prefilled = threading.Barrier(len(decoders))
    stop = until or threading.Event()

    def decode(decoder: SwarmContender) -> DecodeRun:
        try:
            return decoder.decode(prompt_ids, steps, stop, prefilled)
        except BaseException:
            prefilled.abort()  # the others stop waiting for this one
            raise

    with concurrent.futures.ThreadPoolExecutor(len(decoders), thread_name_prefix="bench-decoder") as pool:
        futures = [pool.submit(decode, decoder) for decoder in decoders]
        try:
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C: leaving the pool waits for the decoders, so stop them first
            stop.set()
            prefilled.abort()
            raise
        failed = [future.exception() for future in futures if future.done() and future.exception()]
        if failed:  # the first error, not the others' broken barrier
            raise failed[0]  # type: ignore[misc]
        return [future.result() for future in futures]


def mean_per_token(runs: list[DecodeRun]) -> float:
    steps = [seconds for run in runs for seconds in run.step_seconds]
    return per_token(steps, len(steps))


@dataclass
class Figures:
    """One swarm's measurements, one entry per round."""

    alone: list[float]
    """Seconds per decoded token, the decoders alone."""
    loaded: list[float]
    """Seconds per decoded token while the training client runs."""
    train_pass: list[float]
    """Seconds per training pass while the decoders run."""
    loaded_tokens: list[int]
    """Tokens decoded under load (the sample behind `loaded`)."""
    capped: list[bool]
    """Whether decoding reached --max-loaded-tokens before the training ended (which then ran alone)."""


@dataclass
class Clients:
    """The decoding clients and the training client of one swarm."""

    decoders: list[SwarmContender]
    trainer_model: DistributedModelForCausalLM

    def close(self) -> None:
        for decoder in self.decoders:
            decoder.model.close()
        self.trainer_model.close()


def measure(clients: dict[str, Clients], args: argparse.Namespace, prompt_ids: torch.Tensor,
            train_ids: torch.Tensor) -> tuple[dict[str, Figures], bool]:
    """Warm-up, then rounds in rotating order; returns the figures and whether all tokens agree."""
    progress("warming up")
    for client in clients.values():
        decode_together(client.decoders, prompt_ids, 4)
        Trainer(client.trainer_model, train_ids, 1).one_pass()
    figures = {name: Figures([], [], [], [], []) for name in clients}
    runs: list[tuple[int, ...]] = []
    for number, order in enumerate(rotating_order(args.rounds, list(clients)), 1):
        for name in order:
            decoders, fig = clients[name].decoders, figures[name]
            alone = decode_together(decoders, prompt_ids, args.tokens)
            fig.alone.append(mean_per_token(alone))
            trainer = Trainer(clients[name].trainer_model, train_ids, args.train_passes)
            with trainer.running():
                loaded = decode_together(decoders, prompt_ids, args.max_loaded_tokens, until=trainer.done)
            fig.capped.append(any(len(run.step_seconds) >= args.max_loaded_tokens for run in loaded))
            fig.loaded.append(mean_per_token(loaded))
            fig.loaded_tokens.append(sum(len(run.step_seconds) for run in loaded))
            fig.train_pass.append(trainer.seconds / args.train_passes)
            runs += [run.tokens for run in alone + loaded]
        progress(f"round {number}/{args.rounds}: " + "; ".join(
            f"{name} {figures[name].alone[-1] * 1e3:.0f} ms/token alone, {figures[name].loaded[-1] * 1e3:.0f} "
            f"next to training ({figures[name].loaded_tokens[-1]} tokens), training pass "
            f"{figures[name].train_pass[-1]:.2f} s" for name in clients))
    return figures, _same_greedy_tokens(runs)


def _same_greedy_tokens(runs: list[tuple[int, ...]]) -> bool:
    """Runs of different lengths from one prompt agree on their common prefix."""
    return all(run[:len(other)] == other[:len(run)] for run in runs for other in runs)


def comparisons(figures: dict[str, Figures], other: str) -> list[Comparison]:
    """Priority against `other`, one row per figure."""
    ours, theirs = figures["priority"], figures[other]
    return [
        Comparison("decode alone", tuple(ours.alone), tuple(theirs.alone)),
        Comparison("decode next to training", tuple(ours.loaded), tuple(theirs.loaded)),
        Comparison("training pass (fwd + bwd)", tuple(ours.train_pass), tuple(theirs.train_pass)),
    ]


def report(figures: dict[str, Figures], same: bool, args: argparse.Namespace, blocks: BlockRange) -> str:
    slowdowns = ", ".join(
        f"{name} {Comparison(name, tuple(f.loaded), tuple(f.alone)).paired_ratio:.1f}x "
        f"({sum(f.loaded_tokens)} tokens under load in all)" for name, f in figures.items())
    lines = [
        f"swarm-llm bench mixed: {Path(args.model_path).name}, float32; per swarm one server of blocks {blocks} "
        f"on 127.0.0.1; {args.rounds} rounds, order rotating; medians over rounds",
        f"decoding: {args.decoders} clients at once, greedy, batch 1, {args.tokens} tokens each alone; next to "
        f"training: for as long as a training client's {args.train_passes} forward + backward passes of "
        f"{args.train_batch}x{args.train_tokens} tokens take",
        f"servers: priority = --scheduling priority (batch share {DEFAULT_BATCH_SHARE}), strict = --batch-share 0, "
        f"fifo = --scheduling fifo; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "",
        format_table(comparisons(figures, "fifo"), "priority", "fifo"),
        "",
        format_table(comparisons(figures, "strict"), "priority", "strict"),
        "",
        f"decoding slowed by training (paired, loaded / alone): {slowdowns}",
        f"same greedy tokens in every decoding run: {'yes' if same else 'NO'}",
    ]
    starved = [name for name, f in figures.items() if any(f.capped)]
    if starved:
        lines.append(f"training starved on {', '.join(starved)}: the clients decoded --max-loaded-tokens "
                     f"{args.max_loaded_tokens} before the training ended, which then ran alone, so that "
                     f"training figure is a lower bound")
    return "\n".join(lines)


def as_json(figures: dict[str, Figures], same: bool, args: argparse.Namespace) -> str:
    return json.dumps({
        "model": Path(args.model_path).name, "rounds": args.rounds, "decoders": args.decoders,
        "tokens": args.tokens, "train_batch": args.train_batch, "train_tokens": args.train_tokens,
        "train_passes": args.train_passes, "max_loaded_tokens": args.max_loaded_tokens, "same_tokens": same, "load_average": os.getloadavg()[0],
        "figures": {name: asdict(f) for name, f in figures.items()},
        "rows": {other: [{"name": r.name, "median_priority_s": r.median_a, f"median_{other}_s": r.median_b,
                          "ratio": r.ratio, "paired_ratio": r.paired_ratio} for r in comparisons(figures, other)]
                 for other in ("fifo", "strict")},
    })


def run_bench(args: argparse.Namespace, swarms: dict[str, LocalSwarm], blocks: BlockRange) -> None:
    from client.model import AutoDistributedModelForCausalLM

    prompt_ids = chat_ids(args.model_path, args.prompt)
    clients: dict[str, Clients] = {}

    def client(peers: list[str]) -> DistributedModelForCausalLM:
        return AutoDistributedModelForCausalLM.from_pretrained(args.model_path, peers)

    try:
        for name, swarm in swarms.items():
            clients[name] = Clients([SwarmContender(client(swarm.initial_peers)) for _ in range(args.decoders)],
                                    client(swarm.initial_peers))
        vocab = clients["priority"].trainer_model.head.info.vocab_size
        train_ids = torch.randint(0, vocab, (args.train_batch, args.train_tokens),
                                  generator=torch.Generator().manual_seed(0))
        figures, same = measure(clients, args, prompt_ids, train_ids)
    finally:
        for each in clients.values():
            each.close()
    print(as_json(figures, same, args) if args.json else report(figures, same, args, blocks))


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoConfig

    from swarm.default_model import resolve_model

    args = parse_args(argv)
    quiet_logging()
    began = time.monotonic()
    args.model_path = resolve_model(args.model)
    blocks = BlockRange(0, int(AutoConfig.from_pretrained(args.model_path).num_hidden_layers))
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
            workdir = args.workdir or Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="swarm-bench-mixed-")))
            swarms: dict[str, LocalSwarm] = {}
            for name, server_args in SERVER_ARGS.items():
                progress(f"starting a DHT node and a {name} server of blocks {blocks} on 127.0.0.1")
                config = LocalSwarmConfig(args.model_path, (blocks,), workdir=workdir / name,
                                          server_args=("--drain-grace", "5", *server_args))
                swarms[name] = stack.enter_context(LocalSwarm(config))
            progress(f"swarms ready (logs in {workdir})")
            run_bench(args, swarms, blocks)
    except KeyboardInterrupt:
        progress("interrupted; every process the bench started is stopped")
        return 130
    except LocalSwarmError as error:
        progress(f"failed: {error}")
        return 1
    progress(f"done in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
