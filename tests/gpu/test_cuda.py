"""Blocks on CUDA: identical-to-local greedy through real servers, quantized blocks, the
throughput probe and the memory figures on the device (scripts/gpu-check runs these)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from swarm.model.families import load_block_stack
from swarm.records import BlockRange
from tests.integration.test_quantized_blocks import BOUNDS, SIZE_TARGETS

pytestmark = [pytest.mark.cuda, pytest.mark.timeout(300)]
BLOCKS = BlockRange(0, 2)
needs_bitsandbytes = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                                        reason="bitsandbytes is not installed (the 'quantization' extra)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=768, num_attention_heads=8,
                         num_key_value_heads=4, num_hidden_layers=2, initializer_range=0.02)
    directory = tmp_path_factory.mktemp("llama256-cuda")
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def _update(checkpoint: Path, quantization: str, dtype: str) -> torch.Tensor:
    stack = load_block_stack(checkpoint, BLOCKS, dtype, "cuda", quantization=quantization)
    hidden = torch.randn(2, 9, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = stack.forward(hidden, blocks=BLOCKS, position_ids=torch.arange(9)[None].expand(2, -1))
    assert out.device.type == "cpu"  # handed back where the caller's tensor was
    return (out.float() - hidden)


def test_greedy_through_cuda_servers_equals_local_transformers(tmp_path: Path) -> None:
    from client.model import AutoDistributedModelForCausalLM
    from tests.integration.conftest import start_swarm
    from tests.integration.slicing_models import load_reference

    running = start_swarm(tmp_path, "llama", ["0:3", "3:6"], "--device", "cuda", "--torch-dtype", "float32")
    try:
        ids = torch.tensor([[1, 5, 9, 17, 33, 2, 8]])
        with torch.inference_mode():
            expected = load_reference(running.model_dir).generate(ids, max_new_tokens=12, do_sample=False)
        model = AutoDistributedModelForCausalLM.from_pretrained(running.model_dir, running.peers)
        try:
            got = model.generate(ids, max_new_tokens=12, do_sample=False)
        finally:
            model.close()
    finally:
        running.swarm.stop_all()
    assert got.tolist() == expected.tolist()


def test_auto_dtype_on_a_gpu_is_16_bit_and_caches_live_on_it(checkpoint: Path) -> None:
    stack = load_block_stack(checkpoint, BLOCKS, "auto", "cuda")
    assert stack.dtype in (torch.bfloat16, torch.float16)
    cache = stack.new_cache(BLOCKS)
    with torch.inference_mode():
        stack.forward(torch.randn(1, 4, 256), blocks=BLOCKS, position_ids=torch.arange(4)[None], cache=cache)
    assert cache.nbytes() > 0
    assert all(layer.layers[0].keys.device.type == "cuda" for layer in cache.layers)


@needs_bitsandbytes
@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_quantized_blocks_on_cuda_stay_within_the_cpu_tests_bounds(checkpoint: Path, mode: str) -> None:
    """The bounds of tests/integration/test_quantized_blocks.py (justified there), against
    float32 on the same GPU; compute in float16 (int8's native input) / bfloat16."""
    expected = _update(checkpoint, "none", "float32")
    got = _update(checkpoint, mode, "float16" if mode == "int8" else "bfloat16")
    error = float((got - expected).norm() / expected.norm())
    assert 1e-4 < error < BOUNDS[mode], f"{mode} on cuda: relative error {error:.3f}"


@needs_bitsandbytes
@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_memory_per_quantized_block_on_cuda_meets_the_targets(checkpoint: Path, mode: str) -> None:
    from node.memory import auto_num_blocks, block_bytes

    device = torch.device("cuda")
    full = load_block_stack(checkpoint, BLOCKS, "float32", device).block_bytes()
    weights, kv_per_token = block_bytes(checkpoint, "float32", mode, device)
    assert weights < SIZE_TARGETS[mode] * full
    assert kv_per_token == 2 * 4 * 32 * 4  # keys + values, 4 KV heads of 32, float32
    assert auto_num_blocks(checkpoint, "float32", 1024, 2, mode, device) == 2  # tiny blocks: all fit


def test_throughput_probe_runs_on_the_gpu(checkpoint: Path) -> None:
    from node.throughput import hardware_key, measure

    stack = load_block_stack(checkpoint, BLOCKS, "auto", "cuda")
    throughput = measure(stack)
    assert throughput.inference_tokens_per_s > 0 and throughput.forward_tokens_per_s > 0
    key = hardware_key(stack, "tiny", "nf4")
    assert torch.cuda.get_device_name(0) in key and "|nf4|" in key
