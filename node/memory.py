"""How much memory a block and its KV cache take on the serving device, for `--num-blocks auto`."""

from __future__ import annotations

import logging
import os

import psutil
import torch

from swarm.model.checkpoint import load_config, locate_checkpoint
from swarm.model.device import free_device_bytes, serving_dtype
from swarm.model.families import family_class, load_block_stack
from swarm.records import BlockRange
from node.placement import num_blocks_auto

logger = logging.getLogger(__name__)

RUNTIME_OVERHEAD_BYTES = 1 << 30
"""Kept free for the interpreter, torch's workspace and activations (on a GPU: CUDA's workspace
and activations; the driver's context is already outside the free figure)."""
CPU = torch.device("cpu")


def block_bytes(path: str | os.PathLike[str], dtype: torch.dtype | str, quantization: str = "none",
                device: torch.device = CPU) -> tuple[int, int]:
    """(weight bytes of one block, KV-cache bytes of one token in one block) in the dtype the
    blocks would be served in on `device`. Quantized weights are measured: block 0 is loaded,
    quantized on `device`, counted and freed (their size depends on bitsandbytes' layout)."""
    config = load_config(locate_checkpoint(path))
    family = family_class(config)(config, "meta")
    with torch.device("meta"):
        layer = family.new_layer(0)
    itemsize = torch.empty((), dtype=serving_dtype(dtype, config, device)).element_size()
    weights = sum(p.numel() for p in layer.parameters()) * itemsize
    if quantization != "none":
        weights = load_block_stack(path, BlockRange(0, 1), dtype, device, quantization=quantization).block_bytes()
    return weights, family.kv_elements_per_token() * itemsize


def auto_num_blocks(path: str | os.PathLike[str], dtype: torch.dtype | str, cache_tokens: int,
                    num_blocks: int, quantization: str = "none", device: torch.device = CPU) -> int:
    """As many blocks as the free memory of `device` holds, with their share of the KV budget
    (the caches live on the device too)."""
    weights, kv_per_token = block_bytes(path, dtype, quantization, device)
    free = free_device_bytes(device)
    free = int(psutil.virtual_memory().available) if free is None else free
    available = free - RUNTIME_OVERHEAD_BYTES
    per_block = weights + cache_tokens * kv_per_token
    count = num_blocks_auto(max(available, 0), per_block, 0, num_blocks)
    logger.info("--num-blocks auto: %d blocks (%.1f MiB each with cache, quantization %s, %.1f GiB available "
                "on %s)", count, per_block / 2**20, quantization, available / 2**30, device)
    return count
