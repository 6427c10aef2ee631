"""The simulated scenario: its configuration and the trace of joins and leaves.

Servers of lognormal throughput (tokens/s through one block) holding a uniform number of
blocks in `min_server_blocks`..`max_server_blocks` join and leave. The initial `servers`
join one after another during `ramp_s`; after that joins arrive as a Poisson process and
each server leaves after an exponential lifetime, both at `churn` per server per hour,
so the population hovers around `servers`. The trace depends on the seeded
`random.Random` passed in and nothing else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from node.placement.rebalance import DEFAULT_BALANCE_QUALITY, DEFAULT_MAX_ROUNDS


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate (`scripts/simulate` fills it; the defaults are the documented run)."""

    servers: int = 200
    """Servers at the start; churn keeps the population near this."""
    blocks: int = 30
    """Transformer blocks in the model."""
    hours: float = 4.0
    """Simulated time."""
    seed: int = 0
    churn: float = 0.5
    """Leaves per server per hour (mean lifetime 1/churn hours); joins match them."""
    balance_period_s: float = 600.0
    """How often each server of the rebalance policy asks whether to move."""
    balance_quality: float = DEFAULT_BALANCE_QUALITY
    """Move only if the settled swarm would be over 1/balance_quality times faster."""
    max_rounds: int = DEFAULT_MAX_ROUNDS
    """Rounds of the cascade `should_move` simulates before deciding."""
    jitter: float = 0.2
    """Each balance period is scaled by a uniform factor in [1 - jitter, 1 + jitter]."""
    load_s: float = 60.0
    """Seconds a server loads blocks (at join and after each move) before it serves."""
    min_server_blocks: int = 4
    max_server_blocks: int = 0
    """0 means blocks // 2."""
    median_throughput: float = 100.0
    """Tokens/s of the median server."""
    throughput_sigma: float = 0.8
    """Sigma of the lognormal throughput (0.8: the fastest 10% are ~8x the slowest 10%)."""
    ramp_s: float = 300.0
    """The initial servers join, one after another, during this time."""
    settle_hours: float = 1.0
    """Averages "once settled" start here."""
    sample_s: float = 1800.0
    """Rows of the report's table."""

    def server_blocks_range(self) -> tuple[int, int]:
        """The fewest and most blocks a server holds."""
        top = min(self.max_server_blocks or max(self.blocks // 2, 1), self.blocks)
        return min(self.min_server_blocks, top), top

    def check(self) -> None:
        """Raises ValueError on a configuration the simulation cannot run."""
        if self.servers < 1 or self.blocks < 1 or self.hours <= 0:
            raise ValueError("servers, blocks and hours must be positive")
        if self.churn < 0 or self.balance_period_s <= 0 or self.sample_s <= 0:
            raise ValueError("churn must be >= 0; balance period and sample step > 0")
        if not 0 < self.balance_quality <= 1 or not 0 <= self.jitter < 1:
            raise ValueError("balance_quality must be in (0, 1] and jitter in [0, 1)")
        if self.min_server_blocks < 1 or self.load_s < 0:
            raise ValueError("min_server_blocks must be >= 1 and load_s >= 0")


@dataclass(frozen=True)
class ServerSpec:
    """A simulated server: who it is, how fast, how many blocks it holds."""

    server_id: str
    throughput: float
    num_blocks: int


@dataclass(frozen=True, order=True)
class Event:
    """A join or a leave at `time_s` (`seq` orders simultaneous events)."""

    time_s: float
    seq: int
    kind: str = field(compare=False)
    """"join" or "leave"."""
    server: ServerSpec = field(compare=False)


def make_trace(config: SimulationConfig, rng: random.Random) -> list[Event]:
    """Joins and leaves over `config.hours`, in time order."""
    config.check()
    low, high = config.server_blocks_range()
    end_s = config.hours * 3600.0
    events: list[Event] = []

    def server_joins(index: int, time_s: float) -> None:
        spec = ServerSpec(
            f"s{index:05d}",
            config.median_throughput * rng.lognormvariate(0.0, config.throughput_sigma),
            rng.randint(low, high),
        )
        events.append(Event(time_s, 2 * index, "join", spec))
        if config.churn > 0:
            leave_s = time_s + rng.expovariate(config.churn) * 3600.0
            if leave_s < end_s:
                events.append(Event(leave_s, 2 * index + 1, "leave", spec))

    for i in range(config.servers):
        server_joins(i, config.ramp_s * i / config.servers)
    index, time_s = config.servers, config.ramp_s
    join_rate_per_s = config.churn * config.servers / 3600.0
    while join_rate_per_s > 0:
        time_s += rng.expovariate(join_rate_per_s)
        if time_s >= end_s:
            break
        server_joins(index, time_s)
        index += 1
    events.sort()
    return events
