"""Bounds on tensors decoded from untrusted peers (no torch import: configs use it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorLimits:
    """Upper bounds applied when decoding a tensor from an untrusted peer."""

    max_elements: int = 1 << 28
    """Most elements one tensor may have."""
    max_bytes: int = 1 << 30
    """Most payload bytes one tensor may have."""
    max_dims: int = 8
    """Most dimensions one tensor may have."""
