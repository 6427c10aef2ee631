"""Tiny random-weight checkpoints of every supported family, and a reference runner.

Shared by the slicing/families/head tests. Each config is small (hidden 32, 4 heads,
4 blocks, vocab 128) but keeps what makes its family different: GQA, sliding windows
shorter than the test sequences, tied or untied embeddings, alibi, multi-query, the
new Falcon decoder architecture, experts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    FalconConfig,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)
from transformers.cache_utils import DynamicCache

VOCAB = 128
HIDDEN = 32
_COMMON = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "initializer_range": 0.2}
_ROPE = {"intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}


def _configs(layers: int) -> dict[str, Callable[[], PretrainedConfig]]:
    rope = {**_COMMON, **_ROPE, "num_hidden_layers": layers}
    falcon = {**_COMMON, "num_hidden_layers": layers, "num_attention_heads": 4}
    return {
        "llama": lambda: LlamaConfig(**rope, tie_word_embeddings=True),  # SmolLM2-style
        "mistral": lambda: MistralConfig(**rope, sliding_window=4),
        # blocks 2 and 3 slide (window 4), 0 and 1 attend to everything
        "qwen2": lambda: Qwen2Config(
            **rope, use_sliding_window=True, sliding_window=4, max_window_layers=2
        ),
        "bloom": lambda: BloomConfig(**_COMMON, n_layer=layers, n_head=4),
        "falcon_new": lambda: FalconConfig(**falcon, new_decoder_architecture=True, num_kv_heads=2),
        "falcon_mq": lambda: FalconConfig(**falcon, multi_query=True, parallel_attn=True, bias=False),
        "falcon_alibi": lambda: FalconConfig(
            **falcon, alibi=True, multi_query=False, parallel_attn=False, bias=True
        ),
        "mixtral": lambda: MixtralConfig(**rope, num_local_experts=4, num_experts_per_tok=2),
    }


FAMILY_NAMES = tuple(_configs(4))


def make_config(name: str, layers: int = 4) -> PretrainedConfig:
    return _configs(layers)[name]()


def save_checkpoint(
    name: str, directory: Path, *, layers: int = 4, seed: int = 0, max_shard_size: str | None = None
) -> Path:
    """Saves a random-weight model of family `name` (safetensors) and returns its directory."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(name, layers))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    return directory


def load_reference(directory: Path) -> PreTrainedModel:
    """The whole model, as transformers loads it (float32), for comparisons."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return model.eval()


def left_padded(
    lengths: list[int], total: int, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids [B, total] left-padded to `lengths`, the mask, and HF generate's position ids."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (len(lengths), total), generator=generator)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, total - length :] = 1
    ids = ids * mask  # padding token 0 (its value must not matter)
    return ids, mask, positions_from_mask(mask)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """What `GenerationMixin` computes: cumsum(mask) - 1, with 0 at padding."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def reference_step(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
) -> torch.Tensor:
    """One cached forward of the reference model; returns logits [B, T, vocab]."""
    with torch.inference_mode():
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
    return out.logits
