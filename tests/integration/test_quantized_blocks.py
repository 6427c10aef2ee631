"""Quantized blocks (int8, nf4) on CPU: close to float32, smaller, and served through a swarm.

The accuracy test compares what two Llama blocks ADD to the hidden states (the residual
stream itself passes through unquantized, so comparing whole outputs would hide errors)
with the float32 blocks' update, as a relative L2 error:

- int8 (LLM.int8, one absmax scale per output row): a Gaussian row's max is ~4 sigma, so
  the rounding step is ~4 sigma / 127 and the RMS weight error ~1% of sigma; activations
  are quantized per row too. Expected ~1-2% (1.6% seen); the bound is 5%.
- nf4 (16 levels per block of 64 weights): the RMS weight error is ~10% of sigma (QLoRA's
  figures), and two chained projections per sub-layer add up. Expected ~15-20% (17% seen);
  the bound is 30%. Wrong scales, a transposed weight or an unquantized fallback all land
  far outside (an update of unrelated direction has error ~140%).

The slow test is the issue's end-to-end check: SmolLM2 through 3 nf4 server processes
answers the demo question, and a client that requires int8 finds no route there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from swarm.model.families import BlockStack, load_block_stack
from swarm.records import BlockRange

pytestmark = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                                reason="bitsandbytes is not installed (the 'quantization' extra)")

BOUNDS = {"int8": 0.05, "nf4": 0.30}
"""Relative L2 error of the blocks' update vs float32 (see the module docstring)."""
SIZE_TARGETS = {"int8": 0.6, "nf4": 0.35}
"""Memory per block vs float32, the issue's targets (scripts/bench memory measures the process)."""
BLOCKS = BlockRange(0, 2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Llama blocks of a realistic width (hidden 256, 688 MLP: not a multiple of 64, as in
    real models' odd sizes) with transformers' usual init scale."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=688, num_attention_heads=8,
                         num_key_value_heads=4, num_hidden_layers=2, initializer_range=0.02)
    directory = tmp_path_factory.mktemp("llama256")
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def _run(stack: BlockStack, hidden: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(hidden.shape[1])[None].expand(hidden.shape[0], -1)
    with torch.inference_mode():
        return stack.forward(hidden, blocks=BLOCKS, position_ids=positions)


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_quantized_blocks_stay_within_the_stated_error_of_float32(checkpoint: Path, mode: str) -> None:
    reference = load_block_stack(checkpoint, BLOCKS, "float32")
    quantized = load_block_stack(checkpoint, BLOCKS, "float32", quantization=mode)
    hidden = torch.randn(2, 9, 256, generator=torch.Generator().manual_seed(1))
    expected = _run(reference, hidden) - hidden
    got = _run(quantized, hidden) - hidden
    error = float((got - expected).norm() / expected.norm())
    assert error < BOUNDS[mode], f"{mode}: relative error of the blocks' update {error:.3f}"
    assert error > 1e-4  # the projections really are quantized (float32 would be ~1e-7)
    assert quantized.quantization == mode
    assert quantized.block_bytes() < SIZE_TARGETS[mode] * reference.block_bytes()


@pytest.mark.parametrize("mode", ["int8", "nf4"])
def test_quantized_blocks_step_through_a_kv_cache_like_one_pass(checkpoint: Path, mode: str) -> None:
    stack = load_block_stack(checkpoint, BLOCKS, "float32", quantization=mode)
    hidden = torch.randn(1, 7, 256, generator=torch.Generator().manual_seed(2))
    whole = _run(stack, hidden)
    cache = stack.new_cache(BLOCKS)
    steps = []
    with torch.inference_mode():
        for start, end in ((0, 4), (4, 5), (5, 7)):
            steps.append(stack.forward(hidden[:, start:end], blocks=BLOCKS,
                                       position_ids=torch.arange(start, end)[None], cache=cache))
    assert torch.allclose(torch.cat(steps, dim=1), whole, atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_through_three_nf4_servers_answers_the_demo_question(tmp_path: Path) -> None:
    from client.model import AutoDistributedModelForCausalLM
    from devtools.demo import DEFAULT_PROMPT, DEFAULT_SPANS
    from devtools.launcher import LocalSwarm, LocalSwarmConfig
    from swarm.default_model import resolve_model
    from swarm.errors import SwarmError

    model_dir = resolve_model("default")
    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    ids = torch.as_tensor(tokenizer.apply_chat_template(
        [{"role": "user", "content": DEFAULT_PROMPT}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True)["input_ids"])
    config = LocalSwarmConfig(model_dir, DEFAULT_SPANS, workdir=tmp_path,
                              server_args=("--quantization", "nf4", "--drain-grace", "2", "--throughput", "10"))
    with LocalSwarm(config) as swarm:
        model = AutoDistributedModelForCausalLM.from_pretrained(model_dir, swarm.initial_peers, quantization="nf4")
        try:
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
        finally:
            model.close()
        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert answer.startswith("The capital of France is Paris"), answer
        strict = AutoDistributedModelForCausalLM.from_pretrained(model_dir, swarm.initial_peers,
                                                                 quantization="int8")
        try:
            with pytest.raises(SwarmError):  # every server announces nf4: no int8 route exists
                strict.generate(ids, max_new_tokens=1, do_sample=False)
        finally:
            strict.close()
