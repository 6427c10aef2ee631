"""BLOOM: LayerNorm blocks with a fused QKV projection and alibi position biases.

BLOOM has no sdpa attention in transformers: it runs eager, with an additive 4D float
causal mask and an alibi tensor built from the 2D padding mask (alibi positions count
real tokens only, so left padding shifts nothing). The embeddings are followed by their
own LayerNorm (`word_embeddings_layernorm`), which belongs to the client. Older BLOOM
checkpoints have no "transformer." prefix; both layouts load. Layers return a tuple.
"""

from __future__ import annotations

from typing import ClassVar, cast

import torch
from torch import nn
from transformers import BloomConfig
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask
from transformers.models.bloom.modeling_bloom import BloomBlock, build_alibi_tensor

from swarm.model.families.base import Family, LayerContext, dense_mask
from swarm.records import BlockRange

_MASK = "full_attention"


class BloomFamily(Family):
    """Adapter for BLOOM checkpoints."""

    name: ClassVar[str] = "bloom"
    model_types: ClassVar[tuple[str, ...]] = ("bloom",)
    base_prefixes: ClassVar[tuple[str, ...]] = ("transformer.", "")
    layers_name: ClassVar[str] = "h"
    embed_name: ClassVar[str] = "word_embeddings"
    embed_norm_name: ClassVar[str | None] = "word_embeddings_layernorm"
    final_norm_name: ClassVar[str] = "ln_f"
    attn_implementation: ClassVar[str] = "eager"  # no sdpa path exists for BLOOM

    def new_layer(self, index: int) -> nn.Module:
        return BloomBlock(cast(BloomConfig, self.config), layer_idx=index)

    def _layer_norm(self) -> nn.Module:
        return nn.LayerNorm(self.config.hidden_size, eps=self.config.layer_norm_epsilon)

    def new_final_norm(self) -> nn.Module:
        return self._layer_norm()

    def new_embed_norm(self) -> nn.Module | None:
        return self._layer_norm()

    def make_context(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask_cache: Cache | None,
        blocks: BlockRange,
    ) -> LayerContext:
        alibi = build_alibi_tensor(attention_mask.long(), self.config.n_head, dtype=hidden.dtype)
        mask = dense_mask(
            create_causal_mask(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=attention_mask,
                past_key_values=mask_cache,
            )
        )
        return LayerContext(position_ids=position_ids, masks={_MASK: mask}, alibi=alibi)

    def run_layer(
        self,
        layer: nn.Module,
        index: int,
        hidden: torch.Tensor,
        context: LayerContext,
        cache: Cache | None,
    ) -> torch.Tensor:
        out = layer(
            hidden,
            alibi=context.alibi,
            attention_mask=context.masks[_MASK],
            layer_past=cache,
            use_cache=cache is not None,
        )
        return out[0]  # type: ignore[no-any-return]  # BLOOM layers return (hidden, attn)

    def kv_elements_per_token(self) -> int:
        return 2 * int(self.config.hidden_size)
