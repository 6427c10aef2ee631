"""Pure arithmetic of paired, alternating benchmarks: schedules, medians, ratios, tables.

Contenders (here: the swarm, chained and unchained, and a local reference) are timed in
rounds; the order rotates every round (A B, B A, ... or A B C, B C A, C A B, ...) so
that a slow drift of the machine does not favour whichever always runs first. Each
round gives one figure per contender; a `Comparison` of two of them reports the median
over rounds and the ratio of the medians next to the median of the per-round ratios
(the paired figure, robust to a noisy round).

No clocks, no torch: callers measure, this module summarises.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def rotating_order(rounds: int, names: Sequence[str]) -> list[tuple[str, ...]]:
    """`names` rotated left by the round number: each runs first equally often."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not names:
        raise ValueError("no contenders")
    k = len(names)
    return [tuple(names[(r + i) % k] for i in range(k)) for r in range(rounds)]


@dataclass(frozen=True)
class Comparison:
    """One measured quantity for both contenders, one figure per round (seconds)."""

    name: str
    a: tuple[float, ...]
    b: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.a or len(self.a) != len(self.b):
            raise ValueError(f"{self.name}: need the same, non-zero number of rounds for both "
                             f"({len(self.a)} vs {len(self.b)})")
        if min(self.a) <= 0 or min(self.b) <= 0:
            raise ValueError(f"{self.name}: timings must be positive")

    @property
    def median_a(self) -> float:
        return statistics.median(self.a)

    @property
    def median_b(self) -> float:
        return statistics.median(self.b)

    @property
    def ratio(self) -> float:
        """median(a) / median(b)."""
        return self.median_a / self.median_b

    @property
    def paired_ratio(self) -> float:
        """Median over rounds of a / b within the round."""
        return statistics.median(x / y for x, y in zip(self.a, self.b))

    def spread(self, which: str) -> tuple[float, float]:
        """(min, max) over rounds of contender "a" or "b"."""
        values = self.a if which == "a" else self.b
        return min(values), max(values)


def per_token(seconds: Sequence[float], tokens: int) -> float:
    """Mean seconds per token of one round."""
    if tokens < 1:
        raise ValueError("tokens must be >= 1")
    return sum(seconds) / tokens


def format_table(rows: Sequence[Comparison], a_name: str, b_name: str, target: float | None = None,
                 target_row: str | None = None) -> str:
    """A fixed-width table in milliseconds with both ratios; `target` is noted on `target_row`."""
    header = (f"{'':<30}{a_name + ' ms':>12}{b_name + ' ms':>12}{'ratio':>9}{'paired':>9}"
              f"   {a_name} min-max / {b_name} min-max (ms)")
    lines = [header]
    for row in rows:
        a_lo, a_hi = row.spread("a")
        b_lo, b_hi = row.spread("b")
        note = ""
        if target is not None and row.name == target_row:
            note = f"   target <= {target:.2f}x: {'met' if row.ratio <= target else 'NOT met'}"
        lines.append(
            f"{row.name:<30}{row.median_a * 1e3:>12.1f}{row.median_b * 1e3:>12.1f}"
            f"{row.ratio:>8.2f}x{row.paired_ratio:>8.2f}x"
            f"   {a_lo * 1e3:.1f}-{a_hi * 1e3:.1f} / {b_lo * 1e3:.1f}-{b_hi * 1e3:.1f}{note}"
        )
    return "\n".join(lines)
