"""Output checks: NaN detection, dtype-aware agreement, the majority vote, step sampling."""

from __future__ import annotations

import random

import pytest
import torch

from client.verification import (
    BadOutput,
    StepSampler,
    agree,
    check_finite,
    compared_dtype,
    majority,
    mismatch,
    order_witnesses,
    tolerance,
)
from swarm.codec.compression import compress, decompress
from swarm.protocol import Compression

HONEST = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(0))


def _lie(kind: str) -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros_like(HONEST)
    if kind == "noise":
        return HONEST + torch.randn(HONEST.shape, generator=torch.Generator().manual_seed(1)) * HONEST.std()
    if kind == "passthrough":
        return HONEST * 0.5 + 0.3
    if kind == "rounding32":
        return HONEST * (1 + 1e-6)
    if kind == "rounding16":
        return HONEST.to(torch.bfloat16).to(torch.float32)
    raise ValueError(kind)


@pytest.mark.parametrize(("kind", "dtype", "same"), [
    ("zeros", torch.float32, False),
    ("noise", torch.float32, False),
    ("passthrough", torch.float32, False),
    ("rounding32", torch.float32, True),
    ("rounding16", torch.bfloat16, True),
    ("rounding16", torch.float32, False),
    ("noise", torch.bfloat16, False),
])
def test_agreement_is_within_the_dtype_tolerance(kind: str, dtype: torch.dtype, same: bool) -> None:
    assert agree(HONEST, _lie(kind), dtype) is same


def test_mismatch_edge_cases() -> None:
    assert mismatch(HONEST, HONEST[:, :2]) == float("inf")
    assert mismatch(HONEST, torch.full_like(HONEST, float("nan"))) == float("inf")
    assert mismatch(HONEST, HONEST) == 0.0
    assert tolerance(torch.float32) < tolerance(torch.float16) < tolerance(torch.bfloat16)


@pytest.mark.parametrize(("outputs", "winners", "outvoted"), [
    ({"a": "h", "b": "h", "c": "lie"}, {"a", "b"}, {"c"}),
    ({"a": "lie", "b": "h", "c": "h"}, {"b", "c"}, {"a"}),
    ({"a": "h", "b": "h"}, {"a", "b"}, set()),
    ({"a": "h", "b": "lie"}, set(), set()),
    ({"a": "h", "b": "lie", "c": "lie2"}, set(), set()),
    ({"a": "lie", "b": "lie", "c": "h"}, {"a", "b"}, {"c"}),  # colluding liars win: a known limit
])
def test_majority_vote(outputs: dict[str, str], winners: set[str], outvoted: set[str]) -> None:
    tensors = {"h": HONEST, "lie": torch.zeros_like(HONEST), "lie2": HONEST + 1.0}
    got = majority({name: tensors[kind] for name, kind in outputs.items()}, torch.float32)
    assert got == (winners, outvoted)


def test_non_finite_outputs_are_bad() -> None:
    check_finite(HONEST, "peer", "step")
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = HONEST.clone()
        x[0, 1, 2] = bad
        with pytest.raises(BadOutput, match="1 non-finite"):
            check_finite(x, "peer", "step")


@pytest.mark.parametrize(("fraction", "picked"), [(0.0, 0), (1.0, 1000), (0.25, 247)])
def test_step_sampler_is_seeded(fraction: float, picked: int) -> None:
    sampler = StepSampler(fraction, random.Random(0))
    assert sum(sampler.pick() for _ in range(1000)) == picked
    with pytest.raises(ValueError):
        StepSampler(1.5, random.Random(0))


def test_witnesses_least_asked_first() -> None:
    order = order_witnesses(["x", "y", "z"], {"x": 2, "y": 0, "z": 1}, random.Random(0))
    assert order == ["y", "z", "x"]


@pytest.mark.parametrize("compression", list(Compression))
def test_compressed_answers_are_compared_at_the_wire_precision(compression: Compression) -> None:
    """Two honest float32 answers, one of them rounded by the codec on the wire, agree at the
    precision compared; lies still do not."""
    dtype = compared_dtype(torch.float32, compression)
    assert (dtype is torch.float32) == (compression is Compression.NONE)
    payload = compress(HONEST, compression)
    rounded = HONEST if payload is None else decompress(payload, compression, torch.float32, tuple(HONEST.shape))
    assert agree(HONEST, rounded * (1 + 1e-6), dtype)
    assert compression is Compression.NONE or not torch.equal(rounded, HONEST)
    for kind in ("zeros", "noise", "passthrough"):
        assert not agree(HONEST, _lie(kind), dtype), kind
    assert compared_dtype(torch.bfloat16, Compression.FLOAT16) is torch.bfloat16  # already coarser
