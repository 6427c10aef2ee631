"""Model families: loading a range of transformer blocks from a checkpoint and running it.

One small adapter per architecture family, picked from `config.model_type`:

    llama    Llama 2/3, SmolLM2, Mistral, Qwen2   (swarm.model.families.llama)
    mixtral  Mixtral (per-expert weights fused)  (swarm.model.families.mixtral)
    bloom    BLOOM (eager attention, alibi)       (swarm.model.families.bloom)
    falcon   Falcon, rotary and alibi variants    (swarm.model.families.falcon)

Public interface for the block server: `read_model_info`, `load_block_stack`,
`BlockStack` (forward through a sub-range, KV caches per session) and `SessionCache`.
An unsupported model type raises `UnsupportedModel` (a `CheckpointError`).
"""

from swarm.model.checkpoint import CheckpointError, UnsupportedModel
from swarm.model.families.base import Family, HeadKeys, LayerContext, ModelInfo
from swarm.model.families.detect import (
    FAMILIES,
    SUPPORTED_MODEL_TYPES,
    family_class,
    model_info,
    read_model_info,
)
from swarm.model.families.stack import BlockStack, SessionCache, load_block_stack

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
