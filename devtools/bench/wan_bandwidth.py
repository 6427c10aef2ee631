"""`scripts/bench wan --bandwidth RATE`: a batch forward over rate-capped links, float32
vs float16 hidden states on the wire, side by side in one run.

Three servers behind `DelayProxy`s capped at RATE per direction (and `--delay-ms` one
way); two clients of the same swarm, `wire_compression="none"` (the default) and "auto"
(float16 for float32 activations); `--rounds` forwards of `--batch` x `--length` token
ids each, alternating the order. Every Forward call sends the hidden states to one server
and reads them back, so the bytes on the capped links halve with float16.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from devtools.launcher import LocalSwarmError, sigterm_as_interrupt

TARGET_SPEEDUP = 1.7
"""The issue's target: float16 on the wire >= 1.7x faster than float32 at 20 Mbit/s."""

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(text: str) -> float:
    """'20mbit' / '20Mbit' / '2.5mbyte' -> bytes per second."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]?)(bit|byte|b|bps)?\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"rate {text!r} is not like 20mbit")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    return value if match.group(3) == "byte" else value / 8


def _timed_forward(model: object, ids: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        began = time.perf_counter()
        logits = model(ids).logits  # type: ignore[operator]
        return time.perf_counter() - began, logits.argmax(-1)


def run_bandwidth_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        rate = parse_rate(args.bandwidth)
    except ValueError as error:
        parser.error(str(error))
    try:
        with sigterm_as_interrupt():
            print(run_bandwidth(args, rate), flush=True)
    except KeyboardInterrupt:
        return 130
    except (LocalSwarmError, ValueError) as error:
        print(f"error: {error}", flush=True)
        return 1
    return 0


def run_bandwidth(args: argparse.Namespace, rate: float) -> str:
    from client.config import ClientConfig
    from client.model import AutoDistributedModelForCausalLM
    from devtools.bench.proxied_swarm import proxied_swarm
    from devtools.bench.wan import split_blocks, tiny_checkpoint
    from swarm.default_model import resolve_model
    from swarm.model_names import model_name_of
    from transformers import AutoConfig

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swarm-wan-bw-")))
        model = resolve_model(args.model) if args.model else str(tiny_checkpoint(workdir / "wan-tiny-llama"))
        hf = AutoConfig.from_pretrained(model)
        spans = split_blocks(hf.num_hidden_layers, args.servers)
        swarm, _ = stack.enter_context(proxied_swarm(model, spans, args.delay_ms / 1e3, workdir, rate))
        clients = {}
        for label, kind in (("float32", "none"), ("float16", "auto")):
            config = ClientConfig(initial_peers=(), wire_compression=kind)
            clients[label] = AutoDistributedModelForCausalLM.from_pretrained(
                model, swarm.initial_peers, config=config, model_name=model_name_of(model))
            stack.callback(clients[label].close)
        ids = torch.randint(0, hf.vocab_size, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
        for client in clients.values():
            _timed_forward(client, ids[:, :8])  # warm-up: channels and routes
        seconds: dict[str, list[float]] = {label: [] for label in clients}
        tokens: dict[str, torch.Tensor] = {}
        for round_ in range(args.rounds):
            for label in (list(clients) if round_ % 2 == 0 else list(reversed(list(clients)))):
                took, tokens[label] = _timed_forward(clients[label], ids)
                seconds[label].append(took)
    full, half = statistics.median(seconds["float32"]), statistics.median(seconds["float16"])
    hidden_mb = args.batch * args.length * hf.hidden_size * 4 / 1e6
    same = float((tokens["float32"] == tokens["float16"]).float().mean())
    verdict = "met" if full / half >= TARGET_SPEEDUP else "NOT met"
    return "\n".join([
        f"batch forward {args.batch}x{args.length} through {args.servers} servers, links capped at "
        f"{rate * 8 / 1e6:.1f} Mbit/s each way, {args.delay_ms:.0f} ms one way; {args.rounds} rounds, "
        f"alternating; model {model_name_of(model)} (hidden {hf.hidden_size}: {hidden_mb:.1f} MB of float32 "
        f"hidden states per hop)",
        f"float32 on the wire: median {full:.2f} s   rounds {[round(s, 2) for s in seconds['float32']]}",
        f"float16 on the wire: median {half:.2f} s   rounds {[round(s, 2) for s in seconds['float16']]}",
        f"speed-up {full / half:.2f}x (target >= {TARGET_SPEEDUP}x: {verdict}); "
        f"argmax tokens equal at {same:.2%} of positions",
    ])
