"""Falcon: rotary variants (7B-style multi-query, 40B/180B-style new decoder architecture)
and the alibi variant (RefinedWeb 1B/7B style).

Rotary cos/sin are computed at model level. With alibi, `FalconModel.forward` folds the
alibi bias into the additive causal mask (scaled by 1/sqrt(head_dim)) before the layers
run; this adapter does the same fusion, since the sdpa path of the layer only sees the
mask. The mask is always materialised (never the sdpa `is_causal` shortcut), as
transformers does for Falcon. With the new decoder architecture the layer caches keys and
values already broadcast to every query head, which `kv_elements_per_token` accounts for.
Layers return a tuple.
"""

from __future__ import annotations

import math
from typing import ClassVar, cast

import torch
from torch import nn
from transformers import FalconConfig, PretrainedConfig
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask
from transformers.models.falcon.modeling_falcon import (
    FalconDecoderLayer,
    FalconRotaryEmbedding,
    build_alibi_tensor,
)

from swarm.model.families.base import Family, LayerContext, dense_mask
from swarm.records import BlockRange

_MASK = "full_attention"


class FalconFamily(Family):
    """Adapter for Falcon checkpoints (rotary or alibi)."""

    name: ClassVar[str] = "falcon"
    model_types: ClassVar[tuple[str, ...]] = ("falcon",)
    base_prefixes: ClassVar[tuple[str, ...]] = ("transformer.",)
    layers_name: ClassVar[str] = "h"
    embed_name: ClassVar[str] = "word_embeddings"
    final_norm_name: ClassVar[str] = "ln_f"

    def __init__(self, config: PretrainedConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.rotary: nn.Module | None = None
        if not config.alibi:
            self.rotary = FalconRotaryEmbedding(config=cast(FalconConfig, config)).to(self.device)

    def new_layer(self, index: int) -> nn.Module:
        return FalconDecoderLayer(cast(FalconConfig, self.config), layer_idx=index)

    def new_final_norm(self) -> nn.Module:
        return nn.LayerNorm(self.config.hidden_size, eps=self.config.layer_norm_epsilon)

    def make_context(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask_cache: Cache | None,
        blocks: BlockRange,
    ) -> LayerContext:
        mask = dense_mask(
            create_causal_mask(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=attention_mask,
                past_key_values=mask_cache,
                allow_is_causal_skip=False,  # alibi is added onto it below
            )
        )
        if self.rotary is not None:
            cos_sin = self.rotary(hidden, position_ids=position_ids)
            return LayerContext(position_ids, {_MASK: mask}, position_embeddings=cos_sin)
        heads = self.config.num_attention_heads
        alibi = build_alibi_tensor(attention_mask.long(), heads, dtype=hidden.dtype)
        return LayerContext(position_ids, {_MASK: self._fuse_alibi(mask, alibi)}, alibi=alibi)

    def _fuse_alibi(self, mask: torch.Tensor | None, alibi: torch.Tensor) -> torch.Tensor | None:
        """Alibi folded into the additive mask, exactly as `FalconModel.forward` does it."""
        if mask is None or mask.ndim != 4:
            return mask
        min_value = torch.finfo(alibi.dtype).min
        if mask.dtype == torch.bool:
            mask = torch.where(mask, torch.zeros((), dtype=alibi.dtype, device=mask.device), min_value)
        batch = mask.shape[0]
        scaled = alibi.reshape(batch, -1, *alibi.shape[1:]) / math.sqrt(self.head_dim())
        return torch.masked_fill(scaled, mask < -1, min_value)

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
            position_ids=context.position_ids,
            layer_past=cache,
            use_cache=cache is not None,
            position_embeddings=context.position_embeddings,
        )
        return out[0]  # type: ignore[no-any-return]  # Falcon layers return (hidden, attn)

    def kv_elements_per_token(self) -> int:
        config = self.config
        if config.new_decoder_architecture:
            kv_heads = int(config.num_attention_heads)  # cached after broadcasting to all heads
        elif config.multi_query:
            kv_heads = 1
        else:
            kv_heads = int(config.num_kv_heads)
        return 2 * kv_heads * self.head_dim()
