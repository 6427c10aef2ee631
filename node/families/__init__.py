"""Model families: loading a range of transformer blocks from a checkpoint and running it.

One small adapter per architecture family, picked from `config.model_type`:

    llama    Llama 2/3, SmolLM2, Mistral, Qwen2   (node.families.llama)
    mixtral  Mixtral (per-expert weights fused)  (node.families.mixtral)
    bloom    BLOOM (eager attention, alibi)       (node.families.bloom)
    falcon   Falcon, rotary and alibi variants    (node.families.falcon)

Public interface for the block server: `read_model_info`, `load_block_stack`,
`BlockStack` (forward through a sub-range, KV caches per session) and `SessionCache`.
An unsupported model type raises `UnsupportedModel` (a `CheckpointError`).
"""

from node.checkpoint import CheckpointError, UnsupportedModel
from node.families.base import Family, HeadKeys, LayerContext, ModelInfo
from node.families.detect import (
    FAMILIES,
    SUPPORTED_MODEL_TYPES,
    family_class,
    model_info,
    read_model_info,
)
from node.families.stack import BlockStack, SessionCache, load_block_stack

__all__ = [
    "FAMILIES",
    "SUPPORTED_MODEL_TYPES",
    "BlockStack",
    "CheckpointError",
    "Family",
    "HeadKeys",
    "LayerContext",
    "ModelInfo",
    "SessionCache",
    "UnsupportedModel",
    "family_class",
    "load_block_stack",
    "model_info",
    "read_model_info",
]
