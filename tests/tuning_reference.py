"""A local transformers model with the same deep prompts and LoRA a swarm applies: the reference.

Implemented independently of the servers' code path (`swarm.model.families.tuning`): hooks on
the whole transformers model, found by the modules' own names. A deep prompt of block i is
added to the hidden states entering decoder layer i at the sequence's first positions; a
LoRA pair (A, B) on projection T of block i adds `scale * B (A x)` to T's output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from swarm.tuning import Tuning


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    base: Any = model.base_model
    layers = getattr(base, "layers", None)
    return layers if layers is not None else base.h


@contextlib.contextmanager
def tuned(model: PreTrainedModel, tuning: Tuning) -> Iterator[PreTrainedModel]:
    """`model` with `tuning` applied for the duration of the context."""
    layers = decoder_layers(model)
    handles = []

    def prompt_hook(prompt: torch.Tensor) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            hidden = args[0] if args else kwargs["hidden_states"]
            length = min(prompt.shape[1], hidden.shape[1])
            added = torch.cat([prompt[:, :length].expand(hidden.shape[0], -1, -1),
                               hidden.new_zeros(hidden.shape[0], hidden.shape[1] - length, hidden.shape[2])], dim=1)
            if args:
                return (hidden + added, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden + added}
        return hook

    def lora_hook(a: torch.Tensor, b: torch.Tensor) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            return output + tuning.lora_scale * (inputs[0] @ a.T) @ b.T
        return hook

    try:
        for block, prompt in tuning.prompts.items():
            handles.append(layers[block].register_forward_pre_hook(prompt_hook(prompt), with_kwargs=True))
        for (block, target), (a, b) in tuning.lora.items():
            handles.append(layers[block].get_submodule(target).register_forward_hook(lora_hook(a, b)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def random_tuning(num_blocks: int, hidden: int, targets: dict[str, tuple[int, int]], *, prefix: int = 3,
                  rank: int = 4, scale: float = 2.0, seed: int = 0) -> Tuning:
    """Deep prompts on every other block and LoRA on every target of the rest, small random values."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (0.1 * torch.randn(*shape, generator=generator)).requires_grad_(True)

    prompts = {b: rand(1, prefix, hidden) for b in range(0, num_blocks, 2)}
    lora = {(b, t): (rand(rank, inp), rand(out, rank))
            for b in range(num_blocks) for t, (out, inp) in targets.items()}
    return Tuning(prompts, lora, scale)
