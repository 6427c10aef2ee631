"""Tensor codec: exact round trips for every dtype and shape, and rejection of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.codec.limits import TensorLimits
from swarm.codec.tensors import (
    SUPPORTED_DTYPES,
    decode_tensor,
    encode_tensor,
)
from swarm.errors import CodecError
from swarm.v1 import tensor_pb2

shapes = st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=4)


def _random_tensor(dtype: torch.dtype, shape: list[int], seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=math.prod(shape) * torch.empty((), dtype=dtype).element_size(),
                       dtype=np.uint8)
    tensor = torch.from_numpy(raw).view(dtype).reshape(shape) if raw.size else torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        tensor = torch.from_numpy(raw % 2 == 1).reshape(shape)
    return tensor


@settings(max_examples=200, deadline=None)
@given(dtype=st.sampled_from(SUPPORTED_DTYPES), shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_round_trip_is_bit_exact(dtype: torch.dtype, shape: list[int], seed: int) -> None:
    tensor = _random_tensor(dtype, shape, seed)
    wire = tensor_pb2.Tensor.FromString(encode_tensor(tensor).SerializeToString())
    decoded = decode_tensor(wire)
    assert decoded.dtype == dtype
    assert list(decoded.shape) == shape
    # compare bytes, not values: NaN payloads in random float bits must survive too
    assert decoded.reshape(-1).view(torch.uint8).tolist() == tensor.reshape(-1).view(torch.uint8).tolist()


def test_non_contiguous_and_bf16_values() -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6).t()
    assert torch.equal(decode_tensor(encode_tensor(base)), base)
    bf = torch.tensor([1.5, -2.25, 3e38, 1e-40], dtype=torch.bfloat16)
    assert torch.equal(decode_tensor(encode_tensor(bf)), bf)


@settings(max_examples=100, deadline=None)
@given(dtype=st.sampled_from(SUPPORTED_DTYPES), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       delta=st.integers(-7, 7).filter(lambda d: d != 0))
def test_wrong_byte_length_is_rejected(dtype: torch.dtype, shape: list[int], delta: int) -> None:
    message = encode_tensor(_random_tensor(dtype, shape, 0))
    size = len(message.data)
    if size + delta < 0:
        return
    message.data = (message.data + b"\0" * max(delta, 0))[: size + delta]
    with pytest.raises(CodecError, match="needs .* bytes, got"):
        decode_tensor(message)


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (tensor_pb2.Tensor(dtype=0, shape=[1], data=b"\0"), "unknown tensor dtype"),
        (tensor_pb2.Tensor(dtype=99, shape=[1], data=b"\0"), "unknown tensor dtype"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_INT8, shape=[-1], data=b""), "negative"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_INT8, shape=[2], data=b"\0\0",
                           compression=tensor_pb2.COMPRESSION_BLOCKWISE_8BIT), "compression"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_BOOL, shape=[2], data=b"\0\2"), "bool"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1 << 20, 1 << 20]), "elements"),
        (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1] * 9), "dims"),
    ],
)
def test_malformed_headers_are_rejected(message: tensor_pb2.Tensor, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_tensor(message)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 1000))
def test_limits_are_enforced(n: int) -> None:
    limits = TensorLimits(max_elements=10_000, max_bytes=400)
    message = encode_tensor(torch.zeros(n, dtype=torch.float32))
    if n * 4 > 400:
        with pytest.raises(CodecError, match="at most 400"):
            decode_tensor(message, limits)
    else:
        assert decode_tensor(message, limits).shape == (n,)


@settings(max_examples=100, deadline=None)
@given(dtype=st.sampled_from(SUPPORTED_DTYPES), shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_the_per_step_fast_path_agrees_with_the_general_one(dtype: torch.dtype, shape: list[int], seed: int) -> None:
    """Small uncompressed tensors decode in a few operations (`_decode_small`); a header with
    separately given bytes always takes the general path: both give the same tensor, and it
    is the caller's own (writable, not sharing the message's bytes)."""
    message = encode_tensor(_random_tensor(dtype, shape, seed))
    fast = decode_tensor(message)
    header = tensor_pb2.Tensor(dtype=message.dtype, shape=message.shape, compression=message.compression)
    general = decode_tensor(header, data=message.data)
    assert fast.dtype == general.dtype and fast.shape == general.shape
    assert fast.reshape(-1).view(torch.uint8).tolist() == general.reshape(-1).view(torch.uint8).tolist()
    if fast.numel():
        before = bytes(message.data)
        fast.reshape(-1).view(torch.uint8)[0] ^= 1  # writable, and the message is untouched
        assert message.data == before
