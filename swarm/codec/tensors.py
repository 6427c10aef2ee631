"""Tensors to protobuf `swarm.v1.Tensor` and back: the only place that does this.

Exact round trip for every supported dtype (bfloat16 included) and any shape; lossy
`Compression` of float tensors on request (`swarm.codec.compression`). Decoding
validates everything before touching torch: known dtype and compression, non-negative
dims, element and byte counts under `TensorLimits`, byte length equal to
prod(shape) * itemsize, and bool bytes that are 0 or 1. Decoding is zero-copy: the
returned tensor shares the message's bytes and must be treated as read-only (clone it
before writing in place); a compressed one is a new tensor. Encoding copies once (protobuf `bytes` needs its own buffer).
No pickle anywhere.
"""

from __future__ import annotations

import math
import sys
import warnings
import numpy as np
import torch

from swarm.codec import compression as lossy
from swarm.codec.limits import TensorLimits
from swarm.errors import CodecError
from swarm.protocol import Compression
from swarm.v1 import tensor_pb2

_TORCH_TO_WIRE: dict[torch.dtype, tensor_pb2.DType] = {
    torch.float32: tensor_pb2.DTYPE_FLOAT32,
    torch.float16: tensor_pb2.DTYPE_FLOAT16,
    torch.bfloat16: tensor_pb2.DTYPE_BFLOAT16,
    torch.int64: tensor_pb2.DTYPE_INT64,
    torch.int32: tensor_pb2.DTYPE_INT32,
    torch.int8: tensor_pb2.DTYPE_INT8,
    torch.uint8: tensor_pb2.DTYPE_UINT8,
    torch.bool: tensor_pb2.DTYPE_BOOL,
}
_WIRE_TO_TORCH: dict[int, torch.dtype] = {int(v): k for k, v in _TORCH_TO_WIRE.items()}

DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
"""Our names for the supported dtypes (as used in configs, records and on the CLI)."""

SUPPORTED_DTYPES = tuple(_TORCH_TO_WIRE)

_COMPRESSION_TO_WIRE: dict[Compression, tensor_pb2.Compression] = {
    Compression.NONE: tensor_pb2.COMPRESSION_NONE,
    Compression.FLOAT16: tensor_pb2.COMPRESSION_FLOAT16,
    Compression.BFLOAT16: tensor_pb2.COMPRESSION_BFLOAT16,
    Compression.BLOCKWISE_8BIT: tensor_pb2.COMPRESSION_BLOCKWISE_8BIT,
}
_WIRE_TO_COMPRESSION: dict[int, Compression] = {int(v): k for k, v in _COMPRESSION_TO_WIRE.items()}

_BIG_ENDIAN_HOST = sys.byteorder == "big"
_SMALL: dict[int, tuple[torch.dtype, np.dtype]] = {} if _BIG_ENDIAN_HOST else {
    int(tensor_pb2.DTYPE_FLOAT32): (torch.float32, np.dtype("<f4")),
    int(tensor_pb2.DTYPE_FLOAT16): (torch.float16, np.dtype("<f2")),
    int(tensor_pb2.DTYPE_INT64): (torch.int64, np.dtype("<i8")),
    int(tensor_pb2.DTYPE_INT32): (torch.int32, np.dtype("<i4")),
    int(tensor_pb2.DTYPE_INT8): (torch.int8, np.dtype("i1")),
    int(tensor_pb2.DTYPE_UINT8): (torch.uint8, np.dtype("u1")),
}
"""Dtypes numpy reads as they are (little-endian hosts): the per-step fast paths below."""
_SMALL_TO_WIRE = {torch_dtype: _TORCH_TO_WIRE[torch_dtype] for torch_dtype, _ in _SMALL.values()}
_COPY_BELOW = 64 << 10
"""Payloads up to this size are copied into a writable buffer: a copy of a step's few KiB
costs less than the warning filter a read-only view needs (`warnings.catch_warnings` also
resets the warnings module's caches), on every message of every hop."""


DEFAULT_LIMITS = TensorLimits()


def dtype_to_wire(dtype: torch.dtype) -> tensor_pb2.DType:
    """The `swarm.v1.DType` number of a torch dtype."""
    try:
        return _TORCH_TO_WIRE[dtype]
    except KeyError:
        raise CodecError(f"dtype {dtype} is not supported on the wire") from None


def dtype_from_wire(number: int) -> torch.dtype:
    """The torch dtype of a `swarm.v1.DType` number."""
    try:
        return _WIRE_TO_TORCH[number]
    except KeyError:
        raise CodecError(f"unknown tensor dtype {number}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """Our name of a torch dtype ("float32", ...)."""
    for name, value in DTYPE_NAMES.items():
        if value == dtype:
            return name
    raise CodecError(f"dtype {dtype} is not supported on the wire")


def compression_to_wire(compression: Compression) -> tensor_pb2.Compression:
    """The `swarm.v1.Compression` number of a compression."""
    return _COMPRESSION_TO_WIRE[compression]


def compression_from_wire(number: int) -> Compression:
    """The compression of a `swarm.v1.Compression` number; CodecError if unknown."""
    try:
        return _WIRE_TO_COMPRESSION[number]
    except KeyError:
        raise CodecError(f"unknown tensor compression {number}") from None


def _numpy_viewable(tensor: torch.Tensor) -> bool:
    """A CPU tensor numpy views as it is: a `_SMALL` dtype (not bool, not bfloat16; none on a
    big-endian host), contiguous, no autograd."""
    return (tensor.dtype in _SMALL_TO_WIRE and tensor.device.type == "cpu" and not tensor.requires_grad
            and tensor.is_contiguous())


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    if _numpy_viewable(tensor):
        # the per-step case (activations, positions, masks): one view instead of six ops
        return bytes(tensor.numpy().data)
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    # numpy has no bfloat16/float16 view issues once seen as raw bytes
    raw = flat.view(torch.uint8) if flat.element_size() > 1 else flat
    array = raw.numpy()
    if _BIG_ENDIAN_HOST and tensor.element_size() > 1:
        array = array.view(f">u{tensor.element_size()}").byteswap()
    return array.tobytes()


def tensor_header(tensor: torch.Tensor, compression: Compression = Compression.NONE) -> tensor_pb2.Tensor:
    """A Tensor message with dtype, shape and compression but no data (for chunked streams)."""
    return tensor_pb2.Tensor(
        dtype=dtype_to_wire(tensor.dtype),
        shape=list(tensor.shape),
        compression=_COMPRESSION_TO_WIRE[compression],
    )


def encoded(tensor: torch.Tensor, compression: Compression = Compression.NONE) -> tuple[tensor_pb2.Tensor, bytes]:
    """A tensor's header and payload bytes, compressed as asked where it applies and the
    values survive it (else uncompressed: the header says which)."""
    dtype_to_wire(tensor.dtype)
    packed = lossy.compress(tensor, compression)
    if packed is None:
        return tensor_header(tensor), _raw_bytes(tensor)
    return tensor_header(tensor, compression), packed


def encode_tensor(tensor: torch.Tensor, compression: Compression = Compression.NONE) -> tensor_pb2.Tensor:
    """Serializes a tensor (any device, any strides) into a Tensor message."""
    message = tensor_pb2.Tensor()
    encode_tensor_into(message, tensor, compression)
    return message


def encode_tensor_into(message: tensor_pb2.Tensor, tensor: torch.Tensor,
                       compression: Compression = Compression.NONE) -> None:
    """`encode_tensor` into an empty Tensor field of an enclosing message: a tensor built
    apart and handed to the enclosing message's constructor is copied once more."""
    if compression is Compression.NONE and _numpy_viewable(tensor):
        # the per-step case (activations, positions, masks) in few operations: every hop of
        # every token runs it right after a step or an idle wait, with cold caches
        message.dtype = _SMALL_TO_WIRE[tensor.dtype]
        message.shape.extend(tensor.shape)
        message.data = tensor.numpy().tobytes()
        return
    header, data = encoded(tensor, compression)
    message.CopyFrom(header)
    message.data = data


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw little-endian bytes of a tensor, as streamed after a header."""
    dtype_to_wire(tensor.dtype)
    return _raw_bytes(tensor)


def checked_nbytes(message: tensor_pb2.Tensor, limits: TensorLimits = DEFAULT_LIMITS) -> int:
    """Validates a tensor header and returns how many payload bytes it needs (on the
    wire: compressed ones are fewer; the limits bound the decoded tensor)."""
    dtype = dtype_from_wire(message.dtype)
    compression = compression_from_wire(message.compression)
    if not lossy.applies(compression, dtype):
        raise CodecError(f"compression {compression.name} does not apply to {dtype_name(dtype)} tensors")
    shape = list(message.shape)
    if len(shape) > limits.max_dims:
        raise CodecError(f"tensor has {len(shape)} dims, at most {limits.max_dims} allowed")
    if any(d < 0 for d in shape):
        raise CodecError(f"tensor shape {shape} has a negative dimension")
    numel = math.prod(shape)
    if numel > limits.max_elements:
        raise CodecError(
            f"tensor of shape {shape} has {numel} elements, at most {limits.max_elements} allowed"
        )
    nbytes = int(numel * dtype.itemsize)
    if nbytes > limits.max_bytes:
        raise CodecError(f"tensor of shape {shape} needs {nbytes} bytes, at most {limits.max_bytes} allowed")
    return lossy.wire_nbytes(compression, dtype, numel)


def decode_tensor(
    message: tensor_pb2.Tensor,
    limits: TensorLimits = DEFAULT_LIMITS,
    data: bytes | bytearray | memoryview | None = None,
) -> torch.Tensor:
    """Decodes a Tensor message (or a header plus separately streamed `data`).

    Raises CodecError with a message saying what is wrong.
    """
    if data is None and not message.compression:
        small = _decode_small(message, limits)
        if small is not None:
            return small
    nbytes = checked_nbytes(message, limits)
    payload = message.data if data is None else data
    dtype = dtype_from_wire(message.dtype)
    shape = tuple(message.shape)
    if message.compression != tensor_pb2.COMPRESSION_NONE:
        return lossy.decompress(payload, compression_from_wire(message.compression), dtype, shape)
    if len(payload) != nbytes:
        raise CodecError(
            f"tensor of dtype {dtype_name(dtype)} and shape {list(message.shape)} needs {nbytes} bytes, "
            f"got {len(payload)}"
        )
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        raw = np.frombuffer(payload, dtype=np.uint8)
        if raw.max() > 1:
            raise CodecError("bool tensor holds bytes other than 0 and 1")
    if nbytes <= _COPY_BELOW:
        flat = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    else:
        with warnings.catch_warnings():
            # frombuffer warns that `bytes` is not writable; callers treat it as read-only.
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(payload, dtype=torch.uint8)
    if _BIG_ENDIAN_HOST and flat.numel() and torch.empty((), dtype=dtype).element_size() > 1:
        size = torch.empty((), dtype=dtype).element_size()
        flat = torch.from_numpy(flat.numpy().view(f"<u{size}").astype(f">u{size}").view(np.uint8))
    return flat.view(dtype).reshape(shape)


def _decode_small(message: tensor_pb2.Tensor, limits: TensorLimits) -> torch.Tensor | None:
    """A step's tensor in few operations (the hot path of every hop, run with cold caches):
    an uncompressed tensor of a `_SMALL` dtype, at most `_COPY_BELOW` bytes, that passes
    every check `decode_tensor` makes, copied into its own buffer. None for anything else,
    including anything wrong: the general path then says what."""
    kind = _SMALL.get(message.dtype)
    payload = message.data
    if kind is None or len(payload) > _COPY_BELOW:
        return None
    shape = tuple(message.shape)
    if not shape or len(shape) > limits.max_dims or min(shape) <= 0:
        return None  # (scalars and empty tensors too: rare, and the general path handles them)
    numel = math.prod(shape)
    if numel > limits.max_elements or numel * kind[1].itemsize != len(payload) or len(payload) > limits.max_bytes:
        return None
    return torch.from_numpy(np.frombuffer(payload, dtype=kind[1]).reshape(shape).copy())
