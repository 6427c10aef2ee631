"""The interface every model family adapter implements, and what they share.

A family adapter knows, for one kind of transformers architecture, (1) where a block's
weights live in a checkpoint and how to turn them into one decoder layer without
building the whole model, (2) what a forward call through some layers needs besides the
hidden states (causal masks, rotary embeddings, alibi) and how to call a layer, and
(3) where the client's pieces (embeddings, final norm, LM head) live.

It does not hold sessions or caches (`swarm.model.families.stack` does) and reads no files
(`swarm.model.checkpoint` does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.cache_utils import Cache

from swarm.model.checkpoint import CheckpointError
from swarm.records import BlockRange


@dataclass(frozen=True)
class ModelInfo:
    """What a server and a client need to know about a checkpoint before loading it."""

    family: str  # adapter name: "llama", "bloom", "falcon", "mixtral"
    model_type: str  # config.model_type, e.g. "qwen2"
    num_blocks: int  # transformer blocks (config.num_hidden_layers)
    hidden_size: int
    vocab_size: int
    dtype: torch.dtype  # the checkpoint's own dtype ("auto" resolves to it)
    config: PretrainedConfig = field(compare=False, hash=False, repr=False)


@dataclass
class LayerContext:
    """What all layers of one forward call share, computed once per call."""

    position_ids: torch.Tensor  # [B, T]
    masks: dict[str, torch.Tensor | None]  # by attention type ("full_attention", ...)
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None  # rotary cos/sin
    alibi: torch.Tensor | None = None


def dense_mask(mask: object) -> torch.Tensor | None:
    """A mask from `transformers.masking_utils` as a tensor (sdpa/eager never give BlockMasks)."""
    if mask is None or isinstance(mask, torch.Tensor):
        return mask
    raise TypeError(f"expected a dense attention mask, got {type(mask).__name__}")


@dataclass(frozen=True)
class HeadKeys:
    """Checkpoint names of the client's tensors (norms are prefixes ending in ".")."""

    embed: str
    embed_norm: str | None
    final_norm: str
    lm_head: str | None  # None: tied to (or absent and taken from) the embeddings


class Family(ABC):
    """Adapter for one architecture family; one instance per loaded model and device."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    base_prefixes: ClassVar[tuple[str, ...]]  # e.g. ("model.",); "" for bare checkpoints
    layers_name: ClassVar[str]  # "layers" or "h"
    embed_name: ClassVar[str]
    embed_norm_name: ClassVar[str | None] = None
    final_norm_name: ClassVar[str]
    attn_implementation: ClassVar[str] = "sdpa"

    def __init__(self, config: PretrainedConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        # Left unset (None), transformers builds no causal mask and attention runs
        # non-causal: set it explicitly, always.
        config._attn_implementation = self.attn_implementation

    # ---- checkpoint layout -------------------------------------------------------
    def base_prefix(self, keys: Collection[str]) -> str:
        """The prefix the checkpoint puts before `layers_name`/`embed_name` (e.g. "model.")."""
        for prefix in self.base_prefixes:
            layer_start = f"{prefix}{self.layers_name}."
            if f"{prefix}{self.embed_name}.weight" in keys or any(k.startswith(layer_start) for k in keys):
                return prefix
        raise CheckpointError(
            f"no {self.name} weights found in the checkpoint (looked for "
            f"{[p + self.embed_name for p in self.base_prefixes]})"
        )

    def layer_prefix(self, base: str, index: int) -> str:
        return f"{base}{self.layers_name}.{index}."

    def head_keys(self, keys: Collection[str]) -> HeadKeys:
        base = self.base_prefix(keys)
        tied = bool(getattr(self.config, "tie_word_embeddings", False))
        lm_head = None if tied or "lm_head.weight" not in keys else "lm_head.weight"
        norm = f"{base}{self.embed_norm_name}." if self.embed_norm_name else None
        return HeadKeys(f"{base}{self.embed_name}.weight", norm, f"{base}{self.final_norm_name}.", lm_head)

    # ---- building ----------------------------------------------------------------
    @abstractmethod
    def new_layer(self, index: int) -> nn.Module:
        """An uninitialised decoder layer `index` (called on the meta device)."""

    def convert_layer_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoint names/layout (relative to the layer prefix) -> the module's own."""
        return weights

    def build_layer(self, index: int, weights: dict[str, torch.Tensor]) -> nn.Module:
        """Decoder layer `index` holding `weights` (names relative to its prefix)."""
        with torch.device("meta"):
            layer = self.new_layer(index)
        weights = self.convert_layer_weights(weights)
        expected = set(layer.state_dict())
        if expected != set(weights):
            raise CheckpointError(
                f"block {index}: checkpoint tensors do not match the {self.name} layer "
                f"(missing {sorted(expected - set(weights))}, unexpected {sorted(set(weights) - expected)})"
            )
        try:
            layer.load_state_dict(weights, strict=True, assign=True)
        except RuntimeError as e:  # shape mismatches
            raise CheckpointError(f"block {index}: {e}") from e
        if any(t.is_meta for t in [*layer.parameters(), *layer.buffers()]):
            raise CheckpointError(f"block {index}: some tensors of the layer were never loaded")
        # Each layer gets its own one-layer cache (see stack.SessionCache), so its cache
        # slot is always 0: global indices would make the cache grow empty slots and the
        # mask sizes (read from slot 0) go wrong.
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                setattr(module, "layer_idx", 0)
        layer.requires_grad_(False)
        return layer.eval()

    @abstractmethod
    def new_final_norm(self) -> nn.Module:
        """The norm applied after the last block (uninitialised)."""

    def new_embed_norm(self) -> nn.Module | None:
        """A norm applied right after the embeddings (BLOOM), else None."""
        return None

    # ---- running -----------------------------------------------------------------
    @abstractmethod
    def make_context(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask_cache: Cache | None,
        blocks: BlockRange,
    ) -> LayerContext:
        """Masks and position encodings for `blocks`; `mask_cache` sizes them (past length)."""

    @abstractmethod
    def run_layer(
        self,
        layer: nn.Module,
        index: int,
        hidden: torch.Tensor,
        context: LayerContext,
        cache: Cache | None,
    ) -> torch.Tensor:
        """One decoder layer; appends this call's keys/values to `cache` when given."""

    @abstractmethod
    def kv_elements_per_token(self) -> int:
        """Elements one token adds to one layer's KV cache (keys and values together)."""

    def head_dim(self) -> int:
        heads = int(self.config.num_attention_heads)
        return int(getattr(self.config, "head_dim", None) or self.config.hidden_size // heads)
