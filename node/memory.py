"""How much memory a block and its KV cache take, for `--num-blocks auto`."""

from __future__ import annotations

import logging
import os

import psutil
import torch

from swarm.model.checkpoint import load_config, locate_checkpoint, resolve_dtype
from swarm.model.families import family_class
from node.placement import num_blocks_auto

logger = logging.getLogger(__name__)

RUNTIME_OVERHEAD_BYTES = 1 << 30
"""Kept free for the interpreter, torch's workspace and activations."""


def block_bytes(path: str | os.PathLike[str], dtype: torch.dtype | str) -> tuple[int, int]:
    """(weight bytes of one block, KV-cache bytes of one token in one block)."""
    config = load_config(locate_checkpoint(path))
    family = family_class(config)(config, "meta")
    with torch.device("meta"):
        layer = family.new_layer(0)
    itemsize = torch.empty((), dtype=resolve_dtype(dtype, config)).element_size()
    weights = sum(p.numel() for p in layer.parameters()) * itemsize
    return weights, family.kv_elements_per_token() * itemsize


def auto_num_blocks(path: str | os.PathLike[str], dtype: torch.dtype | str, cache_tokens: int,
                    num_blocks: int) -> int:
    """As many blocks as this machine's free memory holds, with their share of the KV budget."""
    weights, kv_per_token = block_bytes(path, dtype)
    available = int(psutil.virtual_memory().available) - RUNTIME_OVERHEAD_BYTES
    per_block = weights + cache_tokens * kv_per_token
    count = num_blocks_auto(max(available, 0), per_block, 0, num_blocks)
    logger.info("--num-blocks auto: %d blocks (%.1f MiB each with cache, %.1f GiB available)",
                count, per_block / 2**20, available / 2**30)
    return count
