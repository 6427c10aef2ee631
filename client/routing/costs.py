"""The price of an inference step along a chain of segments.

A step through segments (s1, r1) ... (sk, rk) costs

    chained:    hop(start -> s1) + sum_i [compute_i + penalty_i + hop(s_i -> s_i+1)]
                + hop(sk -> end)
    unchained:  sum_i [client_rtt(s_i) + compute_i + penalty_i]

where compute_i = len(r_i) * seconds_per_token_per_block(s_i) * tokens_per_step,
penalty_i = cache_penalty_s if s_i's free cache < session_tokens, else 0. A hop is half
a round trip: start is the client (half its RTT to s1) or the query's `after` server,
end the client or the query's `before` server.

Every search prices partial chains through `Pricing.enter` and `Pricing.compute`, in
the same order as `step_cost`, so that equal routes get bit-for-bit equal costs (the
tests compare the beam and the exhaustive search with ==).

Not here: choosing segments (`client.routing.search`), measuring latencies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from client.routing.model import LatencyView, RouteCandidate, RouteQuery, RoutingConfig, Segment
from swarm.errors import NoRoute
from swarm.records import BlockRange


class Pricing:
    """The usable candidates of one query, clipped to its span, and their prices."""

    def __init__(
        self,
        candidates: Sequence[RouteCandidate],
        latency: LatencyView,
        query: RouteQuery,
        config: RoutingConfig,
    ) -> None:
        self.query = query
        self._latency = latency
        self._config = config
        self.by_id: dict[str, RouteCandidate] = {}
        for cand in candidates:
            if cand.server_id in self.by_id:
                raise ValueError(f"server {cand.server_id} is listed twice")
            clipped = _clip(cand, query.span)
            if clipped is not None and cand.server_id not in query.banned:
                self.by_id[cand.server_id] = clipped
        # sorted by id so that every search meets candidates in the same order
        ordered = sorted(self.by_id.values(), key=lambda c: c.server_id)
        self.covering: dict[int, tuple[RouteCandidate, ...]] = {
            b: tuple(c for c in ordered if b in c.blocks) for b in _blocks(query.span)
        }
        _check_covered(self.covering, query)
        self._work = {
            c.server_id: (
                c.seconds_per_token_per_block * query.tokens_per_step,
                config.cache_penalty_s if c.free_cache_tokens < query.session_tokens else 0.0,
            )
            for c in ordered
        }
        # exits[s]: the blocks where a segment of s may end, ascending; a segment may
        # end at the span's end, or where another server can take over: a chain ending
        # anywhere else is a dead end (the same server cannot follow itself)
        self.exits: dict[str, tuple[int, ...]] = {
            c.server_id: tuple(
                b for b in range(c.blocks.start + 1, c.blocks.end + 1) if self._can_leave(c, b)
            )
            for c in ordered
        }

    def _can_leave(self, cand: RouteCandidate, block: int) -> bool:
        if block == self.query.span.end:
            return True
        return any(c.server_id != cand.server_id for c in self.covering[block])

    def enter(self, cost: float, prev: str | None, cand: RouteCandidate) -> float:
        """`cost` plus the hop into `cand` from `prev` (None: the chain's start)."""
        cfg = self._config
        if not cfg.chained:
            return cost + self._latency.client_rtt(cand.server_id, cfg.unknown_rtt_s)
        if prev is None:
            prev = self.query.after
        if prev is None:
            return cost + self._latency.client_rtt(cand.server_id, cfg.unknown_rtt_s) / 2.0
        return cost + self._latency.link_s(prev, cand.server_id, cfg.unknown_rtt_s)

    def compute(self, cost: float, cand: RouteCandidate, num_blocks: int) -> float:
        """`cost` plus `num_blocks` blocks of compute on `cand` and its cache penalty."""
        work, penalty = self._work[cand.server_id]
        # adding a 0.0 penalty leaves the sum bit-for-bit unchanged
        return cost + work * num_blocks + penalty

    def finish(self, cost: float, last: str) -> float:
        """`cost` plus the hop from the chain's last server to its end."""
        cfg = self._config
        if not cfg.chained:
            return cost
        if self.query.before is not None:
            return cost + self._latency.link_s(last, self.query.before, cfg.unknown_rtt_s)
        return cost + self._latency.client_rtt(last, cfg.unknown_rtt_s) / 2.0


def step_cost(
    segments: Sequence[Segment],
    candidates: Sequence[RouteCandidate],
    latency: LatencyView,
    query: RouteQuery,
    config: RoutingConfig,
) -> float:
    """Expected seconds of one inference step along `segments` (formula above).

    Raises ValueError if the segments do not cover the query's span contiguously or
    use blocks (or servers) that no usable candidate offers.
    """
    pricing = Pricing(candidates, latency, query, config)
    position, cost, prev = query.span.start, 0.0, None
    for seg in segments:
        cand = pricing.by_id.get(seg.server_id)
        if cand is None or not cand.blocks.covers(seg.blocks) or seg.blocks.start != position:
            raise ValueError(f"segment {seg} does not continue the chain at block {position}")
        if seg.server_id == prev:
            raise ValueError(f"segment {seg} follows its own server")
        cost = pricing.compute(pricing.enter(cost, prev, cand), cand, len(seg.blocks))
        position, prev = seg.blocks.end, seg.server_id
    if prev is None or position != query.span.end:
        raise ValueError(f"segments end at block {position}, not {query.span.end}")
    return pricing.finish(cost, prev)


def _check_covered(covering: dict[int, tuple[RouteCandidate, ...]], query: RouteQuery) -> None:
    for block, holders in covering.items():  # in block order: the first gap is named
        if not holders:
            raise NoRoute(
                f"no usable server holds block {block} of {query.model or 'the model'}"
                f" ({len(query.banned)} banned)",
                model=query.model,
                block=block,
            )


def _clip(cand: RouteCandidate, span: BlockRange) -> RouteCandidate | None:
    start, end = max(cand.blocks.start, span.start), min(cand.blocks.end, span.end)
    if start >= end:
        return None
    return dataclasses.replace(cand, blocks=BlockRange(start, end))


def _blocks(span: BlockRange) -> range:
    return range(span.start, span.end)
