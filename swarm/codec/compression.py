"""Lossy wire encodings of float tensors (`Tensor.compression`), and their checks.

Pure tensor <-> bytes work; `swarm.codec.tensors` puts the bytes in messages. Formats,
all little-endian, elements in row-major order:

- FLOAT16: a float32 tensor's elements as IEEE binary16 (2 bytes each);
- BFLOAT16: a float32 tensor's elements as bfloat16 (2 bytes each);
- BLOCKWISE_8BIT: any float tensor cut into blocks of `BLOCK` consecutive elements (the
  last one may be shorter): first one float32 scale per block (the block's largest
  magnitude), then one int8 code per element in -127..127; an element is
  code * scale / 127.

An encoder never makes a tensor worse than the receiver would accept: a tensor whose
values do not survive the encoding (outside float16's range, NaN or infinity) is sent
uncompressed (`compress` returns None), so that the receiver answers about non-finite
input exactly as without compression. A decoder refuses (CodecError) a compression the
dtype does not allow, a payload whose size does not match the shape, scales that are
negative, NaN, infinite or beyond the dtype's range, and the code -128 (never produced).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import torch

from swarm.errors import CodecError
from swarm.protocol import Compression

BLOCK = 64
"""Elements per block of BLOCKWISE_8BIT: one float32 scale per 64 codes (6% more bytes);
small blocks keep an outlier channel of the residual stream from flattening its neighbours."""

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_HALF_OF = {Compression.FLOAT16: torch.float16, Compression.BFLOAT16: torch.bfloat16}
_BIG_ENDIAN_HOST = sys.byteorder == "big"


def applies(compression: Compression, dtype: torch.dtype) -> bool:
    """Whether a tensor of `dtype` may travel with `compression` (NONE always may)."""
    if compression is Compression.NONE:
        return True
    if compression is Compression.BLOCKWISE_8BIT:
        return dtype in _FLOATS
    return dtype == torch.float32


def wire_nbytes(compression: Compression, dtype: torch.dtype, numel: int) -> int:
    """Bytes of `numel` elements of `dtype` encoded with `compression` (which must apply)."""
    if compression is Compression.NONE:
        return numel * torch.empty((), dtype=dtype).element_size()
    if compression is Compression.BLOCKWISE_8BIT:
        return 4 * math.ceil(numel / BLOCK) + numel
    return 2 * numel


def _le_bytes(tensor: torch.Tensor) -> bytes:
    """A contiguous CPU tensor's elements as little-endian bytes."""
    array = tensor.reshape(-1).view(torch.uint8).numpy() if tensor.element_size() > 1 else tensor.numpy()
    if _BIG_ENDIAN_HOST and tensor.element_size() > 1:
        array = array.view(f">u{tensor.element_size()}").byteswap()
    return array.tobytes()


def _from_le(payload: bytes | bytearray | memoryview, dtype: torch.dtype) -> torch.Tensor:
    """Little-endian bytes as a flat, read-only tensor of `dtype` (zero-copy on our hosts)."""
    if len(payload) == 0:
        return torch.empty(0, dtype=dtype)
    with warnings.catch_warnings():
        # frombuffer warns that `bytes` is not writable; the result is only read.
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(payload, dtype=torch.uint8)
    size = torch.empty((), dtype=dtype).element_size()
    if _BIG_ENDIAN_HOST and size > 1:
        flat = torch.from_numpy(flat.numpy().view(f"<u{size}").astype(f">u{size}").view(np.uint8))
    return flat.view(dtype)


def compress(tensor: torch.Tensor, compression: Compression) -> bytes | None:
    """The wire bytes of `tensor` under `compression`; None if it does not apply to the
    dtype or the values would not survive it (then the tensor goes uncompressed)."""
    if compression is Compression.NONE or not applies(compression, tensor.dtype):
        return None
    flat = tensor.detach().to("cpu").reshape(-1)
    if compression is Compression.BLOCKWISE_8BIT:
        return _compress_8bit(flat)
    half = flat.to(_HALF_OF[compression])
    if not bool(torch.isfinite(half).all()):
        return None  # overflow (or NaN/inf already there): the receiver must see the real values
    return _le_bytes(half.contiguous())


def _compress_8bit(flat: torch.Tensor) -> bytes | None:
    values = flat.to(torch.float32)
    if not bool(torch.isfinite(values).all()):
        return None
    padded = torch.nn.functional.pad(values, (0, (-values.numel()) % BLOCK)).view(-1, BLOCK)
    scales = padded.abs().amax(dim=1)
    factors = torch.where(scales > 0, 127.0 / scales, torch.zeros_like(scales))
    if not bool(torch.isfinite(factors).all()):
        return None  # a block of subnormals: 127 / scale overflows float32
    codes = torch.round(padded * factors[:, None]).clamp_(-127, 127).to(torch.int8).reshape(-1)
    return _le_bytes(scales.contiguous()) + _le_bytes(codes[: values.numel()].contiguous())


def decompress(payload: bytes | bytearray | memoryview, compression: Compression, dtype: torch.dtype,
               shape: tuple[int, ...]) -> torch.Tensor:
    """The tensor of `dtype` and `shape` encoded in `payload`; raises CodecError."""
    numel = math.prod(shape)
    if not applies(compression, dtype) or compression is Compression.NONE:
        raise CodecError(f"compression {compression.name} does not apply to {dtype} tensors")
    expected = wire_nbytes(compression, dtype, numel)
    if len(payload) != expected:
        raise CodecError(f"{compression.name} tensor of shape {list(shape)} needs {expected} bytes, "
                         f"got {len(payload)}")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    if compression is Compression.BLOCKWISE_8BIT:
        return _decompress_8bit(payload, dtype, numel).reshape(shape)
    return _from_le(payload, _HALF_OF[compression]).to(dtype).reshape(shape)


def _decompress_8bit(payload: bytes | bytearray | memoryview, dtype: torch.dtype, numel: int) -> torch.Tensor:
    blocks = math.ceil(numel / BLOCK)
    view = memoryview(payload)
    scales = _from_le(view[: 4 * blocks], torch.float32)
    codes = _from_le(view[4 * blocks :], torch.int8)
    if not bool(torch.isfinite(scales).all()):
        raise CodecError("BLOCKWISE_8BIT tensor has a NaN or infinite block scale")
    if bool((scales < 0).any()):
        raise CodecError("BLOCKWISE_8BIT tensor has a negative block scale")
    if float(scales.max()) > torch.finfo(dtype).max:
        raise CodecError(f"BLOCKWISE_8BIT block scale {float(scales.max()):g} exceeds the range of {dtype}")
    if bool((codes == -128).any()):
        raise CodecError("BLOCKWISE_8BIT tensor holds the code -128 (codes are -127..127)")
    padded = torch.nn.functional.pad(codes.to(torch.float32), (0, blocks * BLOCK - numel)).view(blocks, BLOCK)
    values = (padded * (scales / 127.0)[:, None]).reshape(-1)[:numel]
    return values.to(dtype)


AUTO = "auto"
"""The default wire policy's name (see `policy`)."""

POLICY_CHOICES = (AUTO, *(c.value for c in Compression))
"""What `ClientConfig.wire_compression` accepts."""


def policy(choice: str, dtype: torch.dtype) -> Compression:
    """The compression a client asks for hidden states of `dtype` under `choice`.

    "auto": FLOAT16 for float32 hidden states, else none (16-bit ones are sent as they
    are). Measured on SmolLM2 with `devtools.bench.wire_policy` (README, "Compressed
    activations"): with every hop of a 3-server route rounded, the greedy outputs of 8
    fixed prompts x 32 tokens were identical to uncompressed ones for float16 and
    bfloat16 (float16 rounds 8x finer, so it is the default) and differed for 4 of 8 with
    blockwise 8-bit, which stays opt-in. Raises ValueError for an unknown `choice`.
    """
    if choice == AUTO:
        return Compression.FLOAT16 if dtype == torch.float32 else Compression.NONE
    try:
        return Compression(choice)
    except ValueError:
        raise ValueError(f"wire compression must be one of {', '.join(POLICY_CHOICES)}, got {choice!r}") from None
