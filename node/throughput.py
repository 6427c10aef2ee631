"""Measures how fast this machine runs the served model's blocks; caches the result.

Figures are tokens per second through ONE block: single-token inference steps (what a
generating client waits for) and batch forward passes (what training and prefill use).
Results are cached per hardware, model, dtype and quantization in a JSON file, so a
restarted server publishes at once. `--throughput` overrides the measurement. The probe
runs where the blocks are (`--device`), timed after the device finishes its queued work.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import torch

from swarm import settings
from swarm.model.device import synchronize
from swarm.model.families import BlockStack
from swarm.records import BlockRange, Throughput

logger = logging.getLogger(__name__)

INFERENCE_STEPS = 12
FORWARD_TOKENS = 128


def cache_path() -> Path:
    return settings.cache_root() / "throughput.json"


def hardware_key(stack: BlockStack, model_name: str, quantization: str) -> str:
    """The cache key: the device (GPU name, or CPU and threads), model, dtype, quantization, torch."""
    device = stack.device
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()} x{torch.get_num_threads()}"
    return f"{hardware}|{model_name}|{stack.dtype}|{quantization}|torch {torch.__version__}"


def _time_inference(stack: BlockStack, block: BlockRange) -> float:
    cache = stack.new_cache(block)
    hidden = torch.randn(1, 1, stack.info.hidden_size, dtype=stack.dtype, device=stack.device)
    mask = torch.ones(1, INFERENCE_STEPS + 1, dtype=torch.int64)
    with torch.inference_mode():
        stack.forward(hidden, blocks=block, position_ids=torch.zeros(1, 1, dtype=torch.int64),
                      attention_mask=mask[:, :1], cache=cache)  # warm-up
        synchronize(stack.device)
        began = time.perf_counter()
        for step in range(1, INFERENCE_STEPS + 1):
            stack.forward(hidden, blocks=block, position_ids=torch.tensor([[step]]),
                          attention_mask=mask[:, : step + 1], cache=cache)
        synchronize(stack.device)
        return INFERENCE_STEPS / (time.perf_counter() - began)


def _time_forward(stack: BlockStack, block: BlockRange) -> float:
    hidden = torch.randn(1, FORWARD_TOKENS, stack.info.hidden_size, dtype=stack.dtype, device=stack.device)
    positions = torch.arange(FORWARD_TOKENS)[None]
    mask = torch.ones(1, FORWARD_TOKENS, dtype=torch.int64)
    with torch.inference_mode():
        stack.forward(hidden, blocks=block, position_ids=positions, attention_mask=mask, cache=None)
        synchronize(stack.device)
        began = time.perf_counter()
        stack.forward(hidden, blocks=block, position_ids=positions, attention_mask=mask, cache=None)
        synchronize(stack.device)
        return FORWARD_TOKENS / (time.perf_counter() - began)


def measure(stack: BlockStack) -> Throughput:
    """Times the first served block (blocks of one model cost the same)."""
    block = BlockRange(stack.blocks.start, stack.blocks.start + 1)
    return Throughput(
        inference_tokens_per_s=round(_time_inference(stack, block), 2),
        forward_tokens_per_s=round(_time_forward(stack, block), 2),
    )


def get_throughput(stack: BlockStack, model_name: str, quantization: str = "none",
                   override: float | None = None) -> Throughput:
    """The cached figures for this hardware and model, measured on first use."""
    if override is not None:
        return Throughput(inference_tokens_per_s=override, forward_tokens_per_s=override)
    path, key = cache_path(), hardware_key(stack, model_name, quantization)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), dict):
        entry = cached[key]
        return Throughput(float(entry.get("inference", 0.0)), float(entry.get("forward", 0.0)))
    throughput = measure(stack)
    logger.info("measured throughput of %s: %.1f tokens/s (inference), %.1f tokens/s (forward) per block",
                model_name, throughput.inference_tokens_per_s, throughput.forward_tokens_per_s)
    cached[key] = {"inference": throughput.inference_tokens_per_s, "forward": throughput.forward_tokens_per_s}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as error:
        logger.warning("could not cache throughput in %s: %s", path, error)
    return throughput
