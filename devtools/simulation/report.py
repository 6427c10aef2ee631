"""Runs every policy over one trace and reports: a text table and a JSON-ready result.

The upper bound is `node.placement.bounds.average_bound`, sum_i t_i * b_i / num_blocks
over the servers present (loading ones included): however servers are placed, the
per-block throughputs add up to sum_i t_i * b_i, and the slowest block is at most the
mean. Each server holds a fixed number of blocks, so no placement beats it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from devtools.simulation.replay import POLICIES, Tally, replay
from devtools.simulation.trace import SimulationConfig, make_trace


@dataclass(frozen=True)
class PolicyResult:
    """How one policy did."""

    policy: str
    throughput: list[float]
    """Swarm throughput (tokens/s) at each sample time."""
    settled_ratio: float
    """Time average of throughput / bound after settle_hours."""
    worst_settled_ratio: float
    """Lowest throughput / bound after settle_hours."""
    migrations: int
    migrations_per_server_hour: float
    uncovered_fraction: float
    """Fraction of time, after the initial servers loaded, with a block no one served."""


@dataclass(frozen=True)
class SimulationResult:
    """Everything one run reports."""

    config: SimulationConfig
    sample_hours: list[float]
    servers: list[int]
    """Servers present at each sample time (the same trace for every policy)."""
    bound: list[float]
    """The upper bound (tokens/s) at each sample time."""
    policies: list[PolicyResult]

    def policy(self, name: str) -> PolicyResult:
        """The result of the policy called `name`."""
        return next(p for p in self.policies if p.policy == name)


def simulate(config: SimulationConfig) -> SimulationResult:
    """Generates one trace from `config.seed` and replays it under every policy."""
    trace = make_trace(config, random.Random(config.seed))
    tallies = []
    for n, policy in enumerate(POLICIES):
        # Each policy draws from its own stream, so draws made by one (jitter, random
        # starts) do not shift another's.
        tallies.append(replay(policy, trace, config, random.Random(config.seed * 1000 + n + 1)))
    first = tallies[0].samples  # bound and population depend on the trace only
    return SimulationResult(
        config=config,
        sample_hours=[(k + 1) * config.sample_s / 3600.0 for k in range(len(first))],
        servers=[s[2] for s in first],
        bound=[s[1] for s in first],
        policies=[_result(p, t, config) for p, t in zip(POLICIES, tallies, strict=True)],
    )


def _result(policy: str, tally: Tally, config: SimulationConfig) -> PolicyResult:
    watched_s = config.hours * 3600.0 - config.ramp_s - config.load_s
    settled = tally.settled_seconds > 0
    return PolicyResult(
        policy=policy,
        throughput=[s[0] for s in tally.samples],
        settled_ratio=tally.ratio_seconds / tally.settled_seconds if settled else 0.0,
        worst_settled_ratio=tally.worst_ratio if settled else 0.0,
        migrations=tally.migrations,
        migrations_per_server_hour=(
            tally.migrations * 3600.0 / tally.server_seconds if tally.server_seconds else 0.0
        ),
        uncovered_fraction=tally.uncovered_seconds / watched_s if watched_s > 0 else 0.0,
    )


def format_table(result: SimulationResult) -> str:
    """Throughput over time as % of the bound, one column per policy, then a summary."""
    names = " ".join(f"{p.policy:>10}" for p in result.policies)
    lines = [
        "swarm throughput (slowest block) as % of the bound sum_i(t_i*b_i)/num_blocks",
        f"{'hour':>6} {'servers':>7} {'bound tok/s':>12} {names}",
    ]
    for k, hour in enumerate(result.sample_hours):
        bound = result.bound[k]
        cells = " ".join(
            f"{100 * p.throughput[k] / bound:>9.1f}%" if bound > 0 else f"{'-':>10}"
            for p in result.policies
        )
        lines.append(f"{hour:>6.2f} {result.servers[k]:>7} {bound:>12.1f} {cells}")
    rows: list[tuple[str, Callable[[PolicyResult], str]]] = [
        ("mean % of bound *", lambda p: f"{100 * p.settled_ratio:.1f}%"),
        ("worst % of bound *", lambda p: f"{100 * p.worst_settled_ratio:.1f}%"),
        ("migrations", lambda p: f"{p.migrations}"),
        ("migrations/server-h", lambda p: f"{p.migrations_per_server_hour:.3f}"),
        ("time uncovered", lambda p: f"{100 * p.uncovered_fraction:.2f}%"),
    ]
    c = result.config
    lines += ["", f"{f'* = after {c.settle_hours:g} h':<20} {names}"]
    if c.hours <= c.settle_hours:
        rows = rows[2:]  # nothing settled: the run ends before settle_hours
    for label, cell in rows:
        lines.append(f"{label:<20} " + " ".join(f"{cell(p):>10}" for p in result.policies))
    return "\n".join(lines)
