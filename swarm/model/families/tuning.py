"""Applying a client's `Tuning` (deep prompts, LoRA) to frozen decoder layers, and checking it.

Layers are shared by every session of a server, so nothing here changes a module's
weights or keeps a hook past one call: LoRA is a forward hook on each targeted Linear,
registered for the duration of one layer's call (`lora_applied`), which adds
`scale * B (A x)` to the projection's output. Autograd flows through the hook, so a
backward pass yields the factors' gradients; the base weights stay frozen.

A deep prompt is added to the hidden states of the sequence's first positions as they
enter its block (`add_prompt`): in an inference step that starts at position `past`, the
step's positions that fall inside the prompt get its rows `past..`.

`check_tuning` validates untrusted tuning against the served blocks before any compute.
The client uses `lora_targets` on a layer built on the meta device to size its factors.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from swarm.errors import InvalidInput
from swarm.records import BlockRange
from swarm.tuning import MAX_LORA_RANK, MAX_PROMPT_TOKENS, Tuning

MAX_LORA_SCALE = 1e4
"""Largest |alpha / r| accepted (a bound, not a recommendation)."""


def lora_targets(layer: nn.Module) -> dict[str, tuple[int, int]]:
    """Every Linear of a decoder layer by its path in the layer: (out_features, in_features)."""
    return {name: (module.out_features, module.in_features)
            for name, module in layer.named_modules() if isinstance(module, nn.Linear)}


def add_prompt(hidden: torch.Tensor, prompt: torch.Tensor, past: int) -> torch.Tensor:
    """`hidden` [B, T, H] (positions past..past+T) plus the prompt rows that fall in it."""
    end = min(prompt.shape[1], past + hidden.shape[1])
    if end <= past:
        return hidden
    rows = prompt[:, past:end].to(device=hidden.device, dtype=hidden.dtype)
    padding = hidden.new_zeros(rows.shape[0], hidden.shape[1] - (end - past), hidden.shape[2])
    return hidden + torch.cat([rows, padding], dim=1)


@contextlib.contextmanager
def lora_applied(layer: nn.Module, factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 scale: float) -> Iterator[None]:
    """Within the block, each targeted Linear also adds `scale * B (A x)`."""
    if not factors:
        yield
        return
    modules = dict(layer.named_modules())
    handles = []

    def hook_for(a: torch.Tensor, b: torch.Tensor) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            a_, b_ = a.to(device=x.device, dtype=x.dtype), b.to(device=x.device, dtype=x.dtype)
            return output + scale * ((x @ a_.T) @ b_.T)
        return hook

    try:
        for target, (a, b) in factors.items():
            handles.append(modules[target].register_forward_hook(hook_for(a, b)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def block_factors(tuning: Tuning | None, block: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if tuning is None:
        return {}
    return {target: pair for (index, target), pair in tuning.lora.items() if index == block}


def check_tuning(tuning: Tuning, blocks: BlockRange, hidden_size: int, batch: int | None,
                 targets: dict[str, tuple[int, int]]) -> None:
    """InvalidInput unless every tensor fits a served block, its shape and a finite range.

    `targets`: the projections a block has (every block of a family has the same ones);
    `batch`: the call's batch size (None: not known yet, e.g. at a session's open).
    """
    if not math.isfinite(tuning.lora_scale) or abs(tuning.lora_scale) > MAX_LORA_SCALE:
        raise InvalidInput(f"lora scale must be finite and at most {MAX_LORA_SCALE:g} in size, "
                           f"got {tuning.lora_scale}")
    for block in tuning.blocks():
        if not blocks.start <= block < blocks.end:
            raise InvalidInput(f"tuning for block {block}, but the call covers blocks {blocks}")
    for block, prompt in tuning.prompts.items():
        rows = (1,) if batch is None else (1, batch)
        if (prompt.ndim != 3 or (batch is not None and prompt.shape[0] not in rows)
                or not 0 < prompt.shape[1] <= MAX_PROMPT_TOKENS or prompt.shape[2] != hidden_size):
            raise InvalidInput(f"deep prompt of block {block} must be [1 or batch, 1..{MAX_PROMPT_TOKENS}, "
                               f"{hidden_size}], got {list(prompt.shape)}")
    for (block, target), (a, b) in tuning.lora.items():
        if target not in targets:
            raise InvalidInput(f"block {block} has no projection {target!r}; LoRA targets are {sorted(targets)}")
        out, inp = targets[target]
        rank = a.shape[0] if a.ndim == 2 else -1
        if not 0 < rank <= MAX_LORA_RANK or tuple(a.shape) != (rank, inp) or tuple(b.shape) != (out, rank):
            raise InvalidInput(f"LoRA factors of block {block} {target!r} must be A [r, {inp}] and B [{out}, r] "
                               f"with 0 < r <= {MAX_LORA_RANK}, got {list(a.shape)} and {list(b.shape)}")
    for tensor in tuning.tensors():
        if not tensor.is_floating_point():
            raise InvalidInput(f"tuning tensors must be floating point, got {tensor.dtype}")
        if not tensor.is_meta and not bool(torch.isfinite(tensor).all()):  # (a header's are meta)
            raise InvalidInput("tuning tensors hold NaN or Inf")
