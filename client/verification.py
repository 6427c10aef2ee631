"""Checking servers' outputs: finite values, agreement within a tolerance, majority vote
(pure: no network, no clocks; randomness is passed in).

A server's activations are accepted only if finite (`check_finite`). For a random
`verify_fraction` of steps the client recomputes a segment's step on another server of
the same blocks and compares (`agree`); on disagreement a third server decides
(`majority`): the one that disagrees with the other two is the liar.

Tolerance: two honest servers differ by rounding only: the recomputation runs the whole
sequence at once (one matmul shape) where the session ran it token by token against a
KV cache (another), so sums are reordered. Errors grow with the dtype's epsilon and the
depth of the segment; relative to the activations' scale they stay around 1e-6 in
float32 and 1e-2 in half precision over a handful of blocks. The tolerances below sit
~100x above that, and far below what a lie does (zeros, the input passed through, or
noise at the activations' scale all differ by >= 10% of the scale).

Not here: the calls (`client.verifier`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from swarm.errors import PeerUnavailable
from swarm.finite import all_finite, non_finite_count
from swarm.protocol import Compression

RELATIVE_TOLERANCE: dict[torch.dtype, float] = {
    torch.float32: 1e-3,
    torch.float64: 1e-6,
    torch.float16: 2e-2,
    torch.bfloat16: 5e-2,
}
"""Largest |a - b| allowed, relative to max |b|, by the dtype the activations travel in."""


class BadOutput(PeerUnavailable):
    """A server's activations were non-finite or outvoted by other servers: it is failed
    over and banned like one that died."""


def check_finite(hidden: torch.Tensor, peer: str, what: str) -> None:
    """Raises `BadOutput` if `hidden` holds a NaN or an infinity."""
    if not all_finite(hidden):
        bad = non_finite_count(hidden)
        raise BadOutput(f"{peer} returned {bad} non-finite values for {what}", code="DATA_LOSS", peer=peer)


WIRE_PRECISION: dict[Compression, torch.dtype] = {
    Compression.FLOAT16: torch.float16,
    Compression.BFLOAT16: torch.bfloat16,
    Compression.BLOCKWISE_8BIT: torch.bfloat16,  # (<= 1/254 of a block's largest value: bfloat16's order)
}
"""The precision activations keep on the wire under each compression."""


def tolerance(dtype: torch.dtype) -> float:
    return RELATIVE_TOLERANCE.get(dtype, 5e-2)


def compared_dtype(dtype: torch.dtype, compression: Compression) -> torch.dtype:
    """The dtype whose tolerance two servers' outputs are compared with: the session's, or the
    coarser precision its activations travel in (each server's answer is rounded on the wire,
    so honest answers differ by that rounding; a lie still differs by >= 10%)."""
    wire = WIRE_PRECISION.get(compression)
    return wire if wire is not None and tolerance(wire) > tolerance(dtype) else dtype


def mismatch(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the larger of max |a| and max |b| (inf if shapes differ or any
    value is non-finite)."""
    if a.shape != b.shape:
        return float("inf")
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if not (bool(torch.isfinite(a64).all()) and bool(torch.isfinite(b64).all())):
        return float("inf")
    scale = max(float(a64.abs().max()), float(b64.abs().max()), 1e-6) if a.numel() else 1.0
    return float((a64 - b64).abs().max()) / scale if a.numel() else 0.0


def agree(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether two servers' outputs for one step are the same within the dtype's tolerance."""
    return mismatch(a, b) <= tolerance(dtype)


def majority(outputs: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[set[str], set[str]]:
    """Splits servers into (agreeing with the majority, outvoted).

    A server is in the majority if it agrees with more than half of the others; with no
    strict majority (e.g. two servers that disagree), nobody is outvoted: both sets hold
    what is known (the first empty).
    """
    names = list(outputs)
    votes = {n: sum(agree(outputs[n], outputs[m], dtype) for m in names if m != n) for n in names}
    winners = {n for n in names if 2 * (votes[n] + 1) > len(names)}
    if not winners:
        return set(), set()
    return winners, set(names) - winners


@dataclass
class VerificationStats:
    """What verification did in one session or model (for logs and tests)."""

    steps_checked: int = 0
    """Segment steps recomputed on another server."""
    disagreements: int = 0
    """Checks where the second server disagreed."""
    unresolved: int = 0
    """Disagreements with no third server to decide."""
    banned: list[str] = field(default_factory=list)
    """Server ids outvoted (or caught returning NaN/Inf), in order."""
    non_finite: int = 0
    """Outputs rejected for NaN/Inf."""


@dataclass
class StepSampler:
    """Which steps to verify: each with probability `fraction` (seeded `rng`, so tests are
    deterministic)."""

    fraction: float
    rng: random.Random

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"verify_fraction must be in [0, 1], got {self.fraction}")

    def pick(self) -> bool:
        return self.fraction > 0.0 and (self.fraction >= 1.0 or self.rng.random() < self.fraction)


def order_witnesses(candidates: list[str], used: dict[str, int], rng: random.Random) -> list[str]:
    """Other holders of the blocks in the order to ask them: least asked first (so every
    replica is asked in turn and a liar among them is soon met), ties at random."""
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda s: used.get(s, 0))
