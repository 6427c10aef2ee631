"""swarm/finite.py: NaN/Inf detection on every dtype, layout and path (numpy or torch)."""

from __future__ import annotations

import pytest
import torch

from swarm.finite import all_finite, non_finite_count

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_bad_value_anywhere_is_found(dtype: torch.dtype, bad: float) -> None:
    for index in range(6):
        tensor = torch.randn(2, 3).to(dtype)
        tensor.view(-1)[index] = bad
        assert not all_finite(tensor)
        assert non_finite_count(tensor) == 1


@pytest.mark.parametrize("dtype", FLOATS)
def test_finite_tensors_pass(dtype: torch.dtype) -> None:
    assert all_finite((torch.randn(4, 5) * 1e3).to(dtype))
    assert all_finite(torch.empty(0, 7, dtype=dtype))


def test_views_see_only_their_own_elements() -> None:
    base = torch.randn(4, 6)
    base[0, 1] = float("nan")  # outside the strided view below
    assert all_finite(base[:, ::2])
    assert not all_finite(base[:, 1::2])
    assert not all_finite(base.t())


def test_integer_and_bool_tensors_are_finite() -> None:
    assert all_finite(torch.arange(10)) and all_finite(torch.ones(3, dtype=torch.bool))
    assert non_finite_count(torch.arange(10)) == 0


def test_tensors_under_autograd_and_inference_mode() -> None:
    leaf = torch.randn(3, requires_grad=True)
    assert all_finite(leaf * 2)
    assert not all_finite(leaf * float("nan"))
    with torch.inference_mode():
        assert not all_finite(torch.full((2, 2), float("inf")))
