"""What wire compression does to greedy outputs: the evidence behind the default policy.

    .venv/bin/python -m devtools.bench.wire_policy [--tokens 32] [--blocks 0 10 20]

Runs the default model (SmolLM2, float32) greedily in this process, with the hidden
states put through the codec (`encode_tensor` with a compression, then `decode_tensor`)
wherever a swarm sends them: into the first block of each server (0, 10, 20 by default:
the client's embeddings and each server's push to the next) and out of the last block
(the last server's result to the client). Prints, for each compression, how many of the
fixed prompts give exactly the uncompressed tokens, and the first differing position.
No network: the rounding is the wire's, the rest is one process (same numbers as a
swarm, whose servers run the same blocks on the same inputs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch

from swarm.codec.tensors import decode_tensor, encode_tensor
from swarm.protocol import Compression

PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Explain photosynthesis in two sentences.",
    "List three prime numbers greater than 50.",
    "Translate 'good morning' into Spanish and German.",
    "Who wrote Pride and Prejudice?",
    "Give me a haiku about autumn rain.",
    "What is 17 times 23?",
)
"""The fixed prompts (one user message each, chat template applied)."""


def _through_wire(tensor: torch.Tensor, compression: Compression) -> torch.Tensor:
    return decode_tensor(encode_tensor(tensor, compression)).clone()


def greedy(model: Any, ids: torch.Tensor, tokens: int, compression: Compression | None,
           blocks: Sequence[int]) -> list[int]:
    """Greedy new tokens; with `compression`, hidden states cross the wire at `blocks`
    (into those layers) and after the last layer."""
    layers = model.model.layers
    handles = []
    if compression is not None:
        def into(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                return (_through_wire(args[0], compression), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": _through_wire(kwargs["hidden_states"], compression)}

        def out_of(module: Any, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (_through_wire(output[0], compression), *output[1:])
            return _through_wire(output, compression)

        handles = [layers[b].register_forward_pre_hook(into, with_kwargs=True) for b in blocks]
        handles.append(layers[len(layers) - 1].register_forward_hook(out_of))
    try:
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=tokens, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
    finally:
        for handle in handles:
            handle.remove()
    return [int(t) for t in out[0, ids.shape[1]:]]


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where `a` and `b` differ (None: identical)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def main(argv: list[str] | None = None) -> int:
    from devtools.bench.common import chat_ids
    from swarm.default_model import resolve_model
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser(prog="python -m devtools.bench.wire_policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt (default 32)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 10, 20], help="first block of each server")
    args = parser.parse_args(argv)
    path = resolve_model("default")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompts = [chat_ids(path, p) for p in PROMPTS]
    reference = [greedy(model, ids, args.tokens, None, args.blocks) for ids in prompts]
    print(f"SmolLM2 float32, {len(PROMPTS)} prompts x {args.tokens} greedy tokens, wire at blocks {args.blocks} + out")
    for compression in (Compression.FLOAT16, Compression.BFLOAT16, Compression.BLOCKWISE_8BIT):
        diffs = [first_difference(greedy(model, ids, args.tokens, compression, args.blocks), ref)
                 for ids, ref in zip(prompts, reference)]
        same = sum(d is None for d in diffs)
        print(f"{compression.value:<11} identical {same}/{len(PROMPTS)}; first differing token per prompt: "
              f"{['-' if d is None else d for d in diffs]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
