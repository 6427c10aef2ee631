"""The client's local share of a model: embeddings in, final norm and LM head out.

`load_client_head` reads only those tensors from a checkpoint (lazily, with
safetensors), never the transformer blocks: the blocks live on the swarm's servers.
BLOOM's `word_embeddings_layernorm` runs right after the embeddings, so it is part of
`embed`. A model with tied embeddings (or a checkpoint without `lm_head.weight`) reuses
the embedding matrix as its LM head, as transformers does.

What this module does not do: tokenisation, sampling or talking to servers.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn
from transformers import PretrainedConfig

from swarm.model.checkpoint import CheckpointReader, load_config, locate_checkpoint, resolve_dtype
from swarm.model.families import Family, HeadKeys, ModelInfo, family_class, model_info
from swarm.errors import InvalidInput

logger = logging.getLogger(__name__)


class ClientHead(nn.Module):
    """Embeddings (+ embedding norm), final norm and LM head of one model."""

    def __init__(
        self,
        info: ModelInfo,
        embedding: nn.Embedding,
        embed_norm: nn.Module | None,
        final_norm: nn.Module,
        lm_head: nn.Linear,
    ) -> None:
        super().__init__()
        self.info = info
        self.embedding = embedding
        self.embed_norm = embed_norm
        self.final_norm = final_norm
        self.lm_head = lm_head

    @property
    def config(self) -> PretrainedConfig:
        return self.info.config

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> hidden states [B, T, H] for the first block."""
        if input_ids.is_floating_point() or input_ids.is_complex():
            raise InvalidInput(f"input_ids must be integers, got {input_ids.dtype}")
        vocab = self.info.vocab_size
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
            raise InvalidInput(f"input_ids must lie in [0, {vocab})")
        hidden: torch.Tensor = self.embedding(input_ids.to(self.device))
        if self.embed_norm is not None:
            hidden = self.embed_norm(hidden)
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, H] after the last block -> logits [B, T, vocab]."""
        normed: torch.Tensor = self.final_norm(hidden.to(device=self.device, dtype=self.dtype))
        out: torch.Tensor = self.lm_head(normed)
        return out


def _head_wanted(family: Family) -> tuple[str, ...]:
    """Name prefixes of every tensor the head may need, whatever the checkpoint's prefix."""
    names = [family.embed_name, family.final_norm_name]
    if family.embed_norm_name:
        names.append(family.embed_norm_name)
    return (*(f"{base}{name}." for base in family.base_prefixes for name in names), "lm_head.")


def _load_module(
    module: nn.Module, prefix: str, reader: CheckpointReader, dtype: torch.dtype, device: str
) -> None:
    """Assigns `prefix + name` for every tensor of a meta-device `module`."""
    names = list(module.state_dict())
    weights = reader.read([prefix + n for n in names], dtype=dtype, device=device)
    module.load_state_dict({n: weights[prefix + n] for n in names}, strict=True, assign=True)


def _build(
    family: Family, keys: HeadKeys, reader: CheckpointReader, dtype: torch.dtype, device: str
) -> tuple[nn.Embedding, nn.Module | None, nn.Module, nn.Linear]:
    config = family.config
    with torch.device("meta"):
        embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        embed_norm = family.new_embed_norm()
        final_norm = family.new_final_norm()
        lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
    _load_module(embedding, keys.embed.removesuffix("weight"), reader, dtype, device)
    if embed_norm is not None and keys.embed_norm is not None:
        _load_module(embed_norm, keys.embed_norm, reader, dtype, device)
    _load_module(final_norm, keys.final_norm, reader, dtype, device)
    if keys.lm_head is None:
        lm_head.weight = embedding.weight  # tied: one matrix, as in transformers
    else:
        _load_module(lm_head, keys.lm_head.removesuffix("weight"), reader, dtype, device)
    return embedding, embed_norm, final_norm, lm_head


def load_client_head(
    path: str | os.PathLike[str], dtype: torch.dtype | str = "auto", device: str = "cpu"
) -> ClientHead:
    """Loads only the embeddings, final norm and LM head of a checkpoint (dir or hub id)."""
    config = load_config(locate_checkpoint(path))
    info = model_info(config)
    family = family_class(config)(config, device)
    torch_dtype = resolve_dtype(dtype, config)
    wanted = _head_wanted(family)
    reader = CheckpointReader(locate_checkpoint(path, wanted=lambda key: key.startswith(wanted)))
    keys = family.head_keys(reader.keys())
    embedding, embed_norm, final_norm, lm_head = _build(family, keys, reader, torch_dtype, device)
    head = ClientHead(info, embedding, embed_norm, final_norm, lm_head)
    head.requires_grad_(False)
    logger.info(
        "loaded the client head of %s (%s, %s, tied=%s): %.1f MiB read",
        path, info.model_type, torch_dtype, keys.lm_head is None, reader.bytes_read / 2**20,
    )
    return head.eval()
