"""Whether a tensor holds only finite values, cheaply enough for every hop of every token.

Every hidden state is checked for NaN/Inf at each hop (a server checks its input and its
output, the client each server's answer). On CPU, float32/float16 go through numpy's
isfinite over the same memory: after a decode step's compute has streamed the blocks'
weights through the caches, torch's dispatcher runs cold and its isfinite + all took
~60 us where numpy took ~35 (tensors of one token, measured here); other dtypes and
devices use torch.
"""

from __future__ import annotations

import numpy as np
import torch

_NUMPY_FLOATS = frozenset({torch.float32, torch.float16, torch.float64})


def all_finite(tensor: torch.Tensor) -> bool:
    """True if no element is NaN or infinite (always true of integer and bool tensors)."""
    if not tensor.dtype.is_floating_point or tensor.numel() == 0:
        return True
    if tensor.dtype in _NUMPY_FLOATS and tensor.device.type == "cpu" and not tensor.requires_grad:
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(torch.isfinite(tensor).all())


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many elements are NaN or infinite."""
    if not tensor.dtype.is_floating_point:
        return 0
    return int((~torch.isfinite(tensor.detach())).sum())
