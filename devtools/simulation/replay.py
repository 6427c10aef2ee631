"""Replays a trace of joins and leaves under one placement policy and tallies the result.

Policies:
  rebalance  greedy join (`choose_blocks`), then every balance period (jittered) each
             serving server asks `should_move` and moves if told to;
  random     a uniformly random start at join, never moves;
  greedy     greedy join, never moves.
A placed server loads its blocks for `load_s` before it serves (at join and after each
move). While loading it is JOINING: decisions count it (as the real swarm's records
do) but it carries no traffic. The measured swarm throughput is the minimum over blocks
of the ONLINE servers' throughput; the bound counts every server present, so time spent
reloading after a move shows up as lost throughput.

Randomness (random starts, jitter) comes from the `random.Random` passed in.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field, replace

from devtools.simulation.trace import Event, ServerSpec, SimulationConfig
from node.placement import ServerSpan, choose_blocks, should_move
from node.placement.spans import UNITS_PER_TOKEN_S, add_span, to_units
from swarm.records import BlockRange, ServerState

POLICIES = ("rebalance", "random", "greedy")


@dataclass
class Tally:
    """What one replay measured. Ratios are swarm throughput / bound."""

    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """At each sample time: (swarm throughput tok/s, bound tok/s, servers present)."""
    migrations: int = 0
    server_seconds: float = 0.0
    uncovered_seconds: float = 0.0
    """Time after the ramp with some block served by no ONLINE server."""
    settled_seconds: float = 0.0
    ratio_seconds: float = 0.0
    """Integral of the ratio over the settled time."""
    worst_ratio: float = float("inf")


@dataclass(frozen=True, order=True)
class _Happening:
    time_s: float
    seq: int
    kind: str = field(compare=False)  # join, leave, check, online, sample
    server_id: str = field(compare=False, default="")
    spec: ServerSpec | None = field(compare=False, default=None)
    token: int = field(compare=False, default=0)


class _Swarm:
    """Placements (the decision view), served per-block totals and the bound's numerator."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.spans: dict[str, ServerSpan] = {}
        self.totals = [0] * config.blocks  # units per block, ONLINE servers only
        self.work = 0  # sum of units x blocks over every server present
        self.tokens: dict[str, int] = {}  # the load in progress, per server

    def place(self, server_id: str, throughput: float, blocks: BlockRange, token: int) -> None:
        self.spans[server_id] = ServerSpan(server_id, blocks, throughput, ServerState.JOINING)
        self.work += to_units(throughput) * len(blocks)
        self.tokens[server_id] = token

    def online(self, server_id: str, token: int) -> None:
        span = self.spans.get(server_id)
        if span is None or self.tokens.get(server_id) != token:
            return  # left, or moved again, while loading
        self.spans[server_id] = replace(span, state=ServerState.ONLINE)
        add_span(self.totals, span.blocks.start, len(span.blocks), to_units(span.throughput))

    def remove(self, server_id: str) -> ServerSpan:
        span = self.spans.pop(server_id)
        units = to_units(span.throughput)
        if span.state == ServerState.ONLINE:
            add_span(self.totals, span.blocks.start, len(span.blocks), -units)
        self.work -= units * len(span.blocks)
        self.tokens.pop(server_id, None)
        return span

    def bound_units(self) -> float:
        return self.work / self.config.blocks


class _Replay:
    """One policy's run over one trace: an event loop over a heap of happenings."""

    def __init__(self, policy: str, config: SimulationConfig, rng: random.Random) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
        self.policy, self.config, self.rng = policy, config, rng
        self.swarm = _Swarm(config)
        self.tally = Tally()
        self.heap: list[_Happening] = []
        self.seq = 0
        self.now = 0.0

    def push(
        self,
        time_s: float,
        kind: str,
        server_id: str = "",
        spec: ServerSpec | None = None,
        token: int = 0,
    ) -> None:
        self.seq += 1
        heapq.heappush(self.heap, _Happening(time_s, self.seq, kind, server_id, spec, token))

    def run(self, trace: list[Event]) -> Tally:
        end_s = self.config.hours * 3600.0
        for event in trace:
            self.push(event.time_s, event.kind, event.server.server_id, spec=event.server)
        k = 1
        while k * self.config.sample_s <= end_s:
            self.push(k * self.config.sample_s, "sample")
            k += 1
        while self.heap and self.heap[0].time_s <= end_s:
            happening = heapq.heappop(self.heap)
            self.advance(happening.time_s)
            self.handle(happening)
        self.advance(end_s)
        return self.tally

    def handle(self, h: _Happening) -> None:
        swarm = self.swarm
        if h.kind == "sample":
            self.tally.samples.append(
                (min(swarm.totals) / UNITS_PER_TOKEN_S, swarm.bound_units() / UNITS_PER_TOKEN_S,
                 len(swarm.spans))
            )
        elif h.kind == "join" and h.spec is not None:
            self.start_loading(h.server_id, h.spec.throughput, self.join_range(h.spec))
            if self.policy == "rebalance":
                self.push(self.next_check(), "check", h.server_id)
        elif h.kind == "leave":
            swarm.remove(h.server_id)
        elif h.kind == "online":
            swarm.online(h.server_id, h.token)
        elif h.kind == "check" and h.server_id in swarm.spans:
            self.check(h.server_id)
            self.push(self.next_check(), "check", h.server_id)

    def start_loading(self, server_id: str, throughput: float, blocks: BlockRange) -> None:
        self.seq += 1
        token = self.seq
        self.swarm.place(server_id, throughput, blocks, token)
        if self.config.load_s > 0:
            self.push(self.now + self.config.load_s, "online", server_id, token=token)
        else:
            self.swarm.online(server_id, token)

    def join_range(self, spec: ServerSpec) -> BlockRange:
        if self.policy == "random":
            start = self.rng.randrange(self.config.blocks - spec.num_blocks + 1)
            return BlockRange(start, start + spec.num_blocks)
        return choose_blocks(
            self.swarm.spans.values(), self.config.blocks, spec.num_blocks, spec.throughput
        )

    def next_check(self) -> float:
        jitter = self.config.jitter
        return self.now + self.config.balance_period_s * self.rng.uniform(1 - jitter, 1 + jitter)

    def check(self, server_id: str) -> None:
        me = self.swarm.spans[server_id]
        if me.state != ServerState.ONLINE:
            return  # still loading: the node's rebalancing loop starts once it serves
        c = self.config
        target = should_move(
            self.swarm.spans.values(), me, c.blocks, c.balance_quality, max_rounds=c.max_rounds
        )
        if target is not None:
            self.swarm.remove(server_id)
            self.start_loading(server_id, me.throughput, target)
            self.tally.migrations += 1

    def advance(self, time_s: float) -> None:
        """Tallies the state held since `self.now` up to `time_s`."""
        dt, c, t = time_s - self.now, self.config, self.tally
        if dt <= 0:
            return
        low = min(self.swarm.totals)
        t.server_seconds += len(self.swarm.spans) * dt
        watched_dt = time_s - max(self.now, c.ramp_s + c.load_s)
        if watched_dt > 0 and low <= 0:
            t.uncovered_seconds += watched_dt
        settled_dt = time_s - max(self.now, c.settle_hours * 3600.0)
        if settled_dt > 0:
            bound = self.swarm.bound_units()
            ratio = low / bound if bound > 0 else 0.0
            t.ratio_seconds += ratio * settled_dt
            t.settled_seconds += settled_dt
            t.worst_ratio = min(t.worst_ratio, ratio)
        self.now = time_s


def replay(
    policy: str, trace: list[Event], config: SimulationConfig, rng: random.Random
) -> Tally:
    """Runs `trace` under `policy` (one of POLICIES) and returns what it measured."""
    return _Replay(policy, config, rng).run(trace)
