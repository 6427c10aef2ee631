"""Which family adapter serves a checkpoint, and the `ModelInfo` summary of a checkpoint.

Detection is by `config.model_type` only; an architecture without an adapter fails with
`UnsupportedModel`, naming the supported types.
"""

from __future__ import annotations

import os

from transformers import PretrainedConfig

from swarm.model.checkpoint import UnsupportedModel, checkpoint_dtype, load_config, locate_checkpoint
from swarm.model.families.base import Family, ModelInfo
from swarm.model.families.bloom import BloomFamily
from swarm.model.families.falcon import FalconFamily
from swarm.model.families.llama import LlamaFamily
from swarm.model.families.mixtral import MixtralFamily

FAMILIES: tuple[type[Family], ...] = (LlamaFamily, MixtralFamily, BloomFamily, FalconFamily)

_BY_MODEL_TYPE: dict[str, type[Family]] = {t: f for f in FAMILIES for t in f.model_types}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(_BY_MODEL_TYPE))


def family_class(config: PretrainedConfig) -> type[Family]:
    """The adapter class for `config.model_type`."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise UnsupportedModel(
            f"model type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return _BY_MODEL_TYPE[model_type]


def model_info(config: PretrainedConfig) -> ModelInfo:
    """The `ModelInfo` of a loaded config (raises `UnsupportedModel` for unknown types)."""
    family = family_class(config)
    return ModelInfo(
        family=family.name,
        model_type=str(config.model_type),
        num_blocks=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        vocab_size=int(config.vocab_size),
        dtype=checkpoint_dtype(config),
        config=config,
    )


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Reads only the config of a checkpoint (a directory, or a hub id where one is reachable)."""
    return model_info(load_config(locate_checkpoint(path)))
