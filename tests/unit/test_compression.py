"""Wire compression of float tensors: sizes, error bounds, fallbacks and refusals."""

from __future__ import annotations

import math
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.codec.compression import AUTO, BLOCK, compress, policy
from swarm.codec.limits import TensorLimits
from swarm.codec.tensors import decode_tensor, encode_tensor
from swarm.errors import CodecError
from swarm.protocol import Compression
from swarm.v1 import tensor_pb2

LOSSY = (Compression.FLOAT16, Compression.BFLOAT16, Compression.BLOCKWISE_8BIT)


def _wire(tensor: torch.Tensor, compression: Compression) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor.FromString(encode_tensor(tensor, compression).SerializeToString())


def _sample(shape: list[int], seed: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    if x.numel() > 3:  # an outlier channel, like the residual stream's massive activations
        x.view(-1)[3] = 300.0 * scale
    return x


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=3), seed=st.integers(0, 2**31),
       scale=st.sampled_from([1e-3, 1.0, 50.0]))
def test_float16_and_bfloat16_error_is_half_an_ulp(shape: list[int], seed: int, scale: float) -> None:
    x = _sample(shape, seed, scale)
    for compression, bits, tiny in ((Compression.FLOAT16, 11, 2.0**-25), (Compression.BFLOAT16, 8, 0.0)):
        wire = _wire(x, compression)
        assert wire.compression == int(compression_number(compression))
        assert len(wire.data) == 2 * x.numel()
        y = decode_tensor(wire)
        assert y.dtype == torch.float32 and y.shape == x.shape
        assert bool(((y - x).abs() <= x.abs() * 2.0**-bits + tiny).all())


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(0, 150), min_size=1, max_size=2), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_blockwise_8bit_error_is_within_half_a_step_of_each_block(shape: list[int], seed: int,
                                                                   dtype: torch.dtype) -> None:
    x = _sample(shape, seed, 2.0).to(dtype)
    wire = _wire(x, Compression.BLOCKWISE_8BIT)
    n = x.numel()
    assert wire.compression == tensor_pb2.COMPRESSION_BLOCKWISE_8BIT
    assert len(wire.data) == 4 * math.ceil(n / BLOCK) + n
    y = decode_tensor(wire)
    assert y.dtype == dtype and y.shape == x.shape
    flat_x, flat_y = x.float().reshape(-1), y.float().reshape(-1)
    for start in range(0, n, BLOCK):
        block = flat_x[start:start + BLOCK]
        # half a quantization step, plus the rounding of the decoded value to `dtype`
        bound = float(block.abs().max()) / 254 * (1 + 1e-5) + block.abs() * torch.finfo(dtype).eps
        assert bool(((flat_y[start:start + BLOCK] - block).abs() <= bound).all())


def compression_number(compression: Compression) -> int:
    return {Compression.NONE: 0, Compression.FLOAT16: 1, Compression.BFLOAT16: 2,
            Compression.BLOCKWISE_8BIT: 3}[compression]


def test_values_that_would_not_survive_travel_uncompressed() -> None:
    big = torch.tensor([1.0, 7e4])  # beyond float16's 65504
    assert _wire(big, Compression.FLOAT16).compression == tensor_pb2.COMPRESSION_NONE
    assert _wire(big, Compression.BFLOAT16).compression == tensor_pb2.COMPRESSION_BFLOAT16
    for compression in LOSSY:
        for bad in (torch.tensor([1.0, math.nan]), torch.tensor([math.inf, 1.0])):
            wire = _wire(bad, compression)  # the receiver sees the non-finite value, as without compression
            assert wire.compression == tensor_pb2.COMPRESSION_NONE
            assert torch.equal(decode_tensor(wire).isnan(), bad.isnan())
    # not a float32 tensor: 16-bit compressions do not apply; nor does any to integers
    assert _wire(torch.ones(3, dtype=torch.float16), Compression.FLOAT16).compression == 0
    assert _wire(torch.ones(3, dtype=torch.int64), Compression.BLOCKWISE_8BIT).compression == 0
    assert compress(torch.ones(3), Compression.NONE) is None


def test_zeros_and_exact_values_round_trip_exactly() -> None:
    x = torch.zeros(2, 130)
    x[1, :3] = torch.tensor([1.0, -1.0, 1.0])  # codes 127 and -127: exact
    for compression in LOSSY:
        assert torch.equal(decode_tensor(_wire(x, compression)), x)


def _header(compression: int, dtype: int = tensor_pb2.DTYPE_FLOAT32, shape: tuple[int, ...] = (2, 3)
            ) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=dtype, shape=list(shape), compression=compression)  # type: ignore[arg-type]


def _blockwise(scales: list[float], codes: list[int], dtype: int = tensor_pb2.DTYPE_FLOAT32) -> tensor_pb2.Tensor:
    message = _header(tensor_pb2.COMPRESSION_BLOCKWISE_8BIT, dtype, (len(codes),))
    message.data = struct.pack(f"<{len(scales)}f", *scales) + struct.pack(f"<{len(codes)}b", *codes)
    return message


@pytest.mark.parametrize("message, says", [
    (_header(7), "unknown tensor compression 7"),
    (_header(tensor_pb2.COMPRESSION_FLOAT16, tensor_pb2.DTYPE_FLOAT16), "does not apply to float16"),
    (_header(tensor_pb2.COMPRESSION_BFLOAT16, tensor_pb2.DTYPE_INT64), "does not apply to int64"),
    (_header(tensor_pb2.COMPRESSION_BLOCKWISE_8BIT, tensor_pb2.DTYPE_INT32), "does not apply to int32"),
    (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[2, 3], compression=tensor_pb2.COMPRESSION_FLOAT16,
                       data=bytes(24)), "needs 12 bytes, got 24"),
    (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[2, 3],
                       compression=tensor_pb2.COMPRESSION_BLOCKWISE_8BIT, data=bytes(6)), "needs 10 bytes, got 6"),
    (_blockwise([math.nan], [1, 2]), "NaN or infinite block scale"),
    (_blockwise([math.inf], [1, 2]), "NaN or infinite block scale"),
    (_blockwise([-1.0], [1, 2]), "negative block scale"),
    (_blockwise([1e6], [1, 2], tensor_pb2.DTYPE_FLOAT16), "exceeds the range"),
    (_blockwise([1.0], [1, -128]), "code -128"),
])
def test_bad_compressed_tensors_are_refused(message: tensor_pb2.Tensor, says: str) -> None:
    with pytest.raises(CodecError, match=says):
        decode_tensor(message)


def test_limits_bound_the_decoded_tensor_not_the_wire_bytes() -> None:
    x = torch.ones(100)
    wire = _wire(x, Compression.BLOCKWISE_8BIT)  # 108 bytes on the wire, 400 decoded
    with pytest.raises(CodecError, match="needs 400 bytes"):
        decode_tensor(wire, TensorLimits(max_bytes=200))
    assert torch.equal(decode_tensor(wire, TensorLimits(max_bytes=400)), x)


def test_policy() -> None:
    assert policy(AUTO, torch.float32) is Compression.FLOAT16
    assert policy(AUTO, torch.bfloat16) is Compression.NONE
    assert policy("blockwise8", torch.float16) is Compression.BLOCKWISE_8BIT
    assert policy("none", torch.float32) is Compression.NONE
    with pytest.raises(ValueError, match="must be one of"):
        policy("zip", torch.float32)
