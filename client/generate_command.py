"""`swarm generate`: generate text through the swarm, streaming tokens as they come.

stdout holds the answer only (and the route and speed after it, or the --json object);
what goes wrong is one line on stderr (`client.command_setup` checks first).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from client.command_setup import CLIENT_FLAGS, add_speculative_flag, positive_int, ranged_float, run_with_model
from client.config import ClientConfig
from swarm.config_flags import add_config_flags

if TYPE_CHECKING:
    import torch

    from client.model import DistributedModelForCausalLM

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("generate", help="generate text through the swarm",
                              description="Generate text through the swarm's servers.")
    add_config_flags(p, ClientConfig, only=CLIENT_FLAGS)
    p.add_argument("--model", default="default",
                   help="checkpoint directory or hub id the client loads its embeddings and head "
                        "from ('default': SmolLM2-135M-Instruct)")
    p.add_argument("--model-name", help="name the servers announce (default: the checkpoint's directory name)")
    p.add_argument("--prompt", required=True, help="the prompt (or the user message with --chat)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="most tokens to generate (default 64)")
    p.add_argument("--temperature", type=ranged_float(0.0), default=0.0,
                   help="sampling temperature; 0 = greedy (default)")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=ranged_float(0.0, 1.0, low_open=True), default=None,
                   help="nucleus sampling threshold, 0 < P <= 1")
    p.add_argument("--repetition-penalty", type=ranged_float(0.0, low_open=True), default=None,
                   help="transformers' repetition penalty, > 0 (1: none)")
    add_speculative_flag(p, "greedy only")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end instead of streaming")
    p.set_defaults(run=run)


def _prompt_ids(tokenizer: Any, prompt: str, chat: bool) -> "torch.Tensor":
    import torch

    if chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    return torch.as_tensor(ids)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens,
                               "speculative": "auto" if args.speculative is None else args.speculative}
    if args.temperature > 0:
        options.update(do_sample=True, temperature=args.temperature)
        if args.top_k is not None:
            options["top_k"] = args.top_k
        if args.top_p is not None:
            options["top_p"] = args.top_p
    else:
        options["do_sample"] = False
    if args.repetition_penalty is not None:
        options["repetition_penalty"] = args.repetition_penalty
    return options


def run(args: argparse.Namespace) -> int:
    return run_with_model(args, _generate)


def _generate(args: argparse.Namespace, tokenizer: Any, model: DistributedModelForCausalLM) -> None:
    from transformers import TextStreamer

    ids = _prompt_ids(tokenizer, args.prompt, args.chat)
    streamer = None if args.json else TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    began = time.perf_counter()
    with model.inference_session(max_length=ids.shape[1] + args.max_new_tokens) as session:
        out = model.generate(ids, streamer=streamer, **_sampling(args))
        route = session.route
    elapsed = time.perf_counter() - began
    new = out[0, ids.shape[1]:]
    speed = len(new) / elapsed if elapsed > 0 else 0.0
    stats = model.speculative_stats
    if args.json:
        json.dump({"text": tokenizer.decode(new, skip_special_tokens=True), "tokens": new.tolist(),
                   "route": route, "seconds": round(elapsed, 3), "tokens_per_s": round(speed, 2),
                   "steps": stats.steps if stats else len(new),
                   "acceptance_rate": round(stats.acceptance_rate, 3) if stats else None}, sys.stdout)
        print()
    else:
        print(f"\n[route: {route}]\n[{len(new)} tokens in {elapsed:.2f} s: {speed:.1f} tokens/s]")
        if stats is not None:
            print(f"[speculative: {len(new)} tokens in {stats.steps} steps, {stats.accepted} of {stats.drafted} "
                  f"drafted tokens accepted ({100 * stats.acceptance_rate:.0f}%)]")
