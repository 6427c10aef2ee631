"""Quantized blocks: the served layers' Linear projections as bitsandbytes int8 or 4-bit NF4.

    layer = quantize_layer(layer, "nf4", compute_dtype=torch.bfloat16, device=torch.device("cuda"))
    resident_bytes(layer)                   # what the layer holds on its device, quantized

Modes (`QUANTIZATIONS`):
    none   the checkpoint's weights in the serving dtype
    int8   LLM.int8 (`bnb.nn.Linear8bitLt`, outlier threshold 6.0: activation columns above it
           are computed in 16 bit): 1 byte a weight plus one float scale per output row
    nf4    4-bit NormalFloat (`bnb.nn.Linear4bit`, blocks of 64 weights, nested statistics):
           half a byte a weight plus about 1/64 byte of scales, computed in the serving dtype

Only the nn.Linear modules of a decoder layer are replaced (the projections hold almost all
of a block's weights); norms, biases and fused expert tensors (Mixtral) keep the serving
dtype. Quantizing happens once, when a block is loaded, block by block, so the float copy
of at most one block exists at a time. bitsandbytes quantizes a weight when it moves from
the CPU to its device: layers are built on the CPU and moved here.

Both modes run on CPU with bitsandbytes >= 0.45 (0.50.2 seen): they save memory there but are
several times slower than float32 matmuls, so a CPU volunteer quantizes only to fit more
blocks. Not here: reading checkpoints (`swarm.model.checkpoint`), building layers
(`swarm.model.families`), choosing how many blocks fit (`node.memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

import torch
from torch import nn

from swarm.model.options import INSTALL_HINT, QuantizationUnavailable, check_quantization

__all__ = ["QuantizationUnavailable", "quantize_layer", "resident_bytes"]

logger = logging.getLogger(__name__)

INT8_THRESHOLD = 6.0
"""LLM.int8's outlier threshold (the paper's and Petals' value)."""
NF4_BLOCKSIZE = 64
"""Weights sharing one NF4 scale (bitsandbytes' default)."""
CPU_PACK_ROWS = 32
"""Row multiple bitsandbytes' packed CPU NF4 kernel needs (`_convert_weight_packed_for_cpu`)."""


def _bitsandbytes() -> Any:
    # On import, its CPU backend warns that an optional faster NF4 kernel package ("kernels")
    # is missing: it then uses its own kernel, which is what the figures here were measured with.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError as error:  # find_spec passed but the import failed (broken native library)
        raise QuantizationUnavailable(f"bitsandbytes does not import ({error}); {INSTALL_HINT}") from error
    # LLM.int8 logs a warning on EVERY matmul whose input is not float16 ("inputs will be cast
    # ... to float16"): that cast is the method, not a fault, and would flood a server's log.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    return bitsandbytes


def _quantized_linear(linear: nn.Linear, mode: str, compute_dtype: torch.dtype) -> nn.Module:
    """A bitsandbytes module holding `linear`'s (CPU, float) weight, not yet quantized."""
    bnb = _bitsandbytes()
    has_bias = linear.bias is not None
    weight = linear.weight.detach()
    module: nn.Module
    # Built on the meta device: their own random init would cost a float copy per projection.
    if mode == "int8":
        module = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                     has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta")
        module.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        module = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                   compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                   device="meta")
        module.weight = bnb.nn.Params4bit(weight, requires_grad=False, blocksize=NF4_BLOCKSIZE,
                                          compress_statistics=True, quant_type="nf4", module=module)
        if linear.out_features % CPU_PACK_ROWS or linear.in_features % NF4_BLOCKSIZE:
            # bitsandbytes' AVX512-bf16 CPU kernel repacks the weight on first use and fails
            # unless rows % 32 == 0 and columns % 64 == 0 (seen: 688): those keep the generic kernel.
            setattr(module, "support_avx512bf16_for_cpu", False)
    if has_bias:
        module.bias = nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
    return module


def quantize_layer(layer: nn.Module, mode: str, compute_dtype: torch.dtype, device: torch.device) -> nn.Module:
    """`layer` (on the CPU, in `compute_dtype`) with its Linear projections quantized, on `device`.

    "none" only moves it. The layer is changed in place and returned, frozen, in eval mode.
    """
    check_quantization(mode)
    if mode != "none":
        targets = [(name, module) for name, module in layer.named_modules()
                   if isinstance(module, nn.Linear) and name]
        for name, linear in targets:
            parent_name, _, child = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, child, _quantized_linear(linear, mode, compute_dtype))
    layer = layer.to(device)  # bitsandbytes quantizes here, on the target device
    if mode != "none" and device.type == "cpu":
        _own_memory(layer)
        _return_freed_memory()
    layer.requires_grad_(False)
    return layer.eval()


def _own_memory(layer: nn.Module) -> None:
    """Gives the float tensors left in `layer` (norms, biases) storage of their own.

    Read on the CPU, they point into the checkpoint's memory map (safetensors), and the map
    stays while any of them lives, with every float page of the block read through it
    resident: a 2 KB norm would keep ~14 MB (a SmolLM2 block) per block.
    """
    for tensor in [*layer.parameters(), *layer.buffers()]:
        if tensor.dtype.is_floating_point:  # (quantized weights are integer: already their own)
            tensor.data = tensor.data.clone()


def _return_freed_memory() -> None:
    """Hands the heap pages freed by quantizing (the float copy, bitsandbytes' temporaries) back
    to the OS, where glibc is the allocator.

    glibc keeps freed chunks below its (adaptive) mmap threshold on its heap, and the small
    quantized tensors allocated between them stop it from trimming: measured over SmolLM2's
    30 blocks, int8 peaked at 0.81x of float32 per block without this and 0.36x with it.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    trim = getattr(ctypes.CDLL(libc_name), "malloc_trim", None)
    if trim is not None:  # (absent from musl and non-Linux C libraries: nothing to do there)
        trim(0)


def _quant_state_tensors(state: Any) -> list[torch.Tensor]:
    """The tensors of a bitsandbytes 4-bit QuantState, nested statistics included."""
    if state is None:
        return []
    found = [getattr(state, name, None) for name in ("absmax", "code", "offset")]
    tensors = [t for t in found if isinstance(t, torch.Tensor)]
    return tensors + _quant_state_tensors(getattr(state, "state2", None))


def resident_bytes(module: nn.Module) -> int:
    """Bytes of every tensor `module` holds: parameters, buffers and quantization statistics
    (int8 row scales, NF4 block scales), each storage counted once."""
    seen: set[int] = set()
    total = 0
    tensors: list[torch.Tensor] = [*module.parameters(), *module.buffers()]
    for param in module.parameters():
        scale = getattr(param, "SCB", None)
        if isinstance(scale, torch.Tensor):
            tensors.append(scale)
        tensors.extend(_quant_state_tensors(getattr(param, "quant_state", None)))
    for tensor in tensors:
        if tensor.is_meta:
            continue
        key = tensor.untyped_storage().data_ptr()
        if key in seen and key != 0:
            continue
        seen.add(key)
        total += tensor.untyped_storage().nbytes()
    return total
