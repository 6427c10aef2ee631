"""Llama-style decoders: Llama 2/3, SmolLM2, Mistral and Qwen2 (model_type llama/mistral/qwen2).

Pre-norm RMSNorm blocks with rotary position embeddings and grouped-query attention.
Rotary cos/sin are computed once per call at model level (`inv_freq` is not in the
checkpoint, it is rebuilt from the config). Sliding-window layers (Mistral with
`sliding_window`, Qwen2 with `layer_types`) get a sliding-window causal mask; their KV
cache keeps every token (the mask hides old ones), which keeps rewinding possible.
Layers return a tensor. Mixtral reuses this adapter (see `swarm.model.families.mixtral`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2

from swarm.model.families.base import Family, LayerContext, dense_mask
from swarm.records import BlockRange

FULL = "full_attention"
SLIDING = "sliding_attention"

# model_type -> (decoder layer, rotary embedding, RMSNorm) classes of transformers 5.
_MODULES: dict[str, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    "llama": (
        modeling_llama.LlamaDecoderLayer,
        modeling_llama.LlamaRotaryEmbedding,
        modeling_llama.LlamaRMSNorm,
    ),
    "mistral": (
        modeling_mistral.MistralDecoderLayer,
        modeling_mistral.MistralRotaryEmbedding,
        modeling_mistral.MistralRMSNorm,
    ),
    "qwen2": (
        modeling_qwen2.Qwen2DecoderLayer,
        modeling_qwen2.Qwen2RotaryEmbedding,
        modeling_qwen2.Qwen2RMSNorm,
    ),
}


class LlamaFamily(Family):
    """Adapter for Llama, Mistral and Qwen2 checkpoints."""

    name: ClassVar[str] = "llama"
    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral", "qwen2")
    base_prefixes: ClassVar[tuple[str, ...]] = ("model.",)
    layers_name: ClassVar[str] = "layers"
    embed_name: ClassVar[str] = "embed_tokens"
    final_norm_name: ClassVar[str] = "norm"
    modules: ClassVar[dict[str, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]]] = _MODULES

    def __init__(self, config: PretrainedConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.layer_class, rotary_class, self.norm_class = self.modules[config.model_type]
        self.rotary = rotary_class(config=config).to(self.device)

    def new_layer(self, index: int) -> nn.Module:
        # The global index picks the layer's attention type (Qwen2 `layer_types`);
        # build_layer then makes its cache slot local.
        return self.layer_class(self.config, index)

    def new_final_norm(self) -> nn.Module:
        return self.norm_class(self.config.hidden_size, eps=self.config.rms_norm_eps)

    def layer_type(self, index: int) -> str:
        """Attention type of block `index`, as the transformers model picks its mask."""
        layer_types = getattr(self.config, "layer_types", None)
        if layer_types:
            return str(layer_types[index])
        return SLIDING if getattr(self.config, "sliding_window", None) is not None else FULL

    def make_context(
        self,
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mask_cache: Cache | None,
        blocks: BlockRange,
    ) -> LayerContext:
        masks: dict[str, torch.Tensor | None] = {}
        for kind in {self.layer_type(i) for i in range(blocks.start, blocks.end)}:
            make_mask: Any = create_sliding_window_causal_mask if kind == SLIDING else create_causal_mask
            masks[kind] = dense_mask(make_mask(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=attention_mask,
                past_key_values=mask_cache,
                position_ids=position_ids,
            ))
        cos_sin = self.rotary(hidden, position_ids=position_ids)
        return LayerContext(position_ids=position_ids, masks=masks, position_embeddings=cos_sin)

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
            attention_mask=context.masks[self.layer_type(index)],
            position_ids=context.position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
            position_embeddings=context.position_embeddings,
        )
        return out  # type: ignore[no-any-return]  # Llama-family layers return a tensor

    def kv_elements_per_token(self) -> int:
        kv_heads = int(getattr(self.config, "num_key_value_heads", None) or self.config.num_attention_heads)
        return 2 * kv_heads * self.head_dim()
