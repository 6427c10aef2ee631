"""Serving options (--quantization, --device) and quantized projections, one Linear at a time.

The block-level accuracy and the swarm runs are in tests/integration/test_quantized_blocks.py;
the CUDA side is tests/gpu/ (scripts/gpu-check).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn
from transformers import LlamaConfig

from swarm.model import options
from swarm.model.device import resolve_device, serving_dtype
from swarm.model.options import DeviceUnavailable, QuantizationUnavailable, check_quantization, parse_device

needs_bitsandbytes = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                                        reason="bitsandbytes is not installed (the 'quantization' extra)")


@pytest.mark.parametrize("text", ["cpu", "cuda", "cuda:0", "cuda:12", "auto"])
def test_well_formed_devices_parse(text: str) -> None:
    assert parse_device(text) == text


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "CPU", "mps", "cuda:0 "])
def test_malformed_devices_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--device must be"):
        parse_device(text)


def test_unknown_quantization_is_refused() -> None:
    with pytest.raises(QuantizationUnavailable, match="expected one of none, int8, nf4"):
        check_quantization("int4")


def test_quantizing_without_bitsandbytes_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options.importlib.util, "find_spec", lambda name: None)
    check_quantization("none")  # needs nothing
    with pytest.raises(QuantizationUnavailable, match=r"swarm-llm\[quantization\]"):
        check_quantization("nf4")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine WITHOUT CUDA")
def test_cuda_device_on_a_machine_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailable, match="no CUDA device"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_dtype_is_the_checkpoints_on_cpu_and_16_bit_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fp32 = LlamaConfig(dtype="float32")
    assert serving_dtype("auto", fp32, torch.device("cpu")) == torch.float32
    assert serving_dtype("float16", fp32, torch.device("cuda")) == torch.float16  # asked for: kept
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert serving_dtype("auto", fp32, torch.device("cuda")) == torch.bfloat16
    assert serving_dtype("auto", LlamaConfig(dtype="float16"), torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # e.g. a T4
    assert serving_dtype("auto", fp32, torch.device("cuda")) == torch.float16


@needs_bitsandbytes
@pytest.mark.parametrize(("mode", "largest_ratio"), [("int8", 0.27), ("nf4", 0.15)])
def test_a_quantized_projection_holds_a_fraction_of_its_float32_bytes(mode: str, largest_ratio: float) -> None:
    """int8: 1 byte a weight + a float32 scale per row (1/4 of float32 plus 4/in_features);
    nf4: half a byte + nested block scales (~1/8 plus ~1/64 byte). Both well under the target
    the issue sets per block (0.6x, 0.35x); the norms left in float32 are a small part."""
    from swarm.model.quantize import quantize_layer, resident_bytes

    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(512, 1024, bias=False))
    before = resident_bytes(layer)
    assert before == 512 * 1024 * 4
    quantized = quantize_layer(layer, mode, torch.float32, torch.device("cpu"))
    ratio = resident_bytes(quantized) / before
    assert 0.1 < ratio <= largest_ratio
    assert type(quantized[0]).__name__ == ("Linear8bitLt" if mode == "int8" else "Linear4bit")
