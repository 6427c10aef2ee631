"""Latency-aware route search: beam search, and the exhaustive search it is tested against.

A chain is a sequence of segments (server, [a, b)) with the first segment starting at
the span's start and each next one starting where the previous ended; a segment may
use any sub-range of its server's blocks (enter mid-range, leave early), and a server
never follows itself (that would be one longer segment). A server may reappear later
in a chain, e.g. around a much faster server that holds the middle of its range; it
then holds two sessions for the client, over different blocks. Chains are priced by
`client.routing.costs` (hops + compute + cache penalties).

`find_route` walks block boundaries p = start .. end-1 in order. The partial chains
that end at p are first reduced to the best one per last server (the future price of
a chain depends only on where it ends and on its last server, so this loses nothing),
then to the `beam_width` cheapest; each survivor is extended by every segment that
starts at p. With beam_width >= the number of servers nothing is pruned and the
result is optimal: equal, cost for cost, to `exhaustive_route`, which enumerates every
chain depth-first (with branch-and-bound pruning on a compute lower bound, so it stays
exact). The exhaustive search is exponential: for tests and small swarms.

Ties are broken deterministically: lower cost, then fewer segments, then the
sequence of (server id, segment end) in lexicographic order.

A segment only ends at block b if another server holds b (or b is the end, see
`Pricing.exits`): a chain that could not be continued would waste a beam slot, and
with this rule every kept chain can be completed (end the next segment where its
server's blocks end), so a route is found whenever every block is held. The
exhaustive search does not use this rule; its dead ends simply never complete.

Not here: measuring latencies, retries and bans (the caller passes `banned`), batch
forward load spreading (`client.routing.spread`).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from client.routing.costs import Pricing
from client.routing.model import (
    LatencyView,
    Route,
    RouteCandidate,
    RouteQuery,
    RoutingConfig,
    Segment,
)
from swarm.errors import NoRoute
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

# Relative slack of the exhaustive search's pruning: its bound and a chain's price are
# the same sum added in different orders, which may differ in the last bits.
_BOUND_SLACK = 1e-9

_Key = tuple[float, int, tuple[tuple[str, int], ...]]


@dataclass(frozen=True)
class _Chain:
    """A partial (or complete) chain and its price so far."""

    cost: float
    segments: tuple[Segment, ...]

    @property
    def last(self) -> str | None:
        return self.segments[-1].server_id if self.segments else None

    def key(self) -> _Key:
        order = tuple((s.server_id, s.blocks.end) for s in self.segments)
        return (self.cost, len(self.segments), order)

    def extend(self, cost: float, server_id: str, blocks: BlockRange) -> _Chain:
        return _Chain(cost, self.segments + (Segment(server_id, blocks),))


def find_route(
    candidates: Sequence[RouteCandidate],
    latency: LatencyView,
    query: RouteQuery,
    config: RoutingConfig = RoutingConfig(),
) -> Route:
    """The cheapest chain over `query.span` that beam search finds (see module doc).

    Raises `NoRoute` naming the first block of the span that no usable (unbanned)
    candidate holds.
    """
    pricing = Pricing(candidates, latency, query, config)
    span = query.span
    # frontier[p][last server]: the best chain found so far that ends at block p
    frontier: dict[int, dict[str, _Chain]] = {p: {} for p in range(span.start, span.end + 1)}
    survivors = [_Chain(0.0, ())]
    for position in range(span.start, span.end):
        if position > span.start:
            survivors = _best(frontier.pop(position).values(), config.beam_width)
        for chain in survivors:
            _extend_all(pricing, chain, position, frontier)
    finished = (
        _Chain(pricing.finish(c.cost, last), c.segments) for last, c in frontier[span.end].items()
    )
    route = _to_route(_best(finished, 1), query)
    logger.debug("route for %s [%s]: %s", query.model, span, route.describe())
    return route


def exhaustive_route(
    candidates: Sequence[RouteCandidate],
    latency: LatencyView,
    query: RouteQuery,
    config: RoutingConfig = RoutingConfig(),
) -> Route:
    """The optimal chain by depth-first enumeration of all chains (small swarms only).

    Same contract and tie-breaking as `find_route`; `config.beam_width` is ignored.
    """
    pricing = Pricing(candidates, latency, query, config)
    bound = _lower_bounds(pricing)
    best: list[_Chain] = []

    def visit(chain: _Chain, position: int) -> None:
        if position == query.span.end:
            last = chain.segments[-1].server_id
            done = _Chain(pricing.finish(chain.cost, last), chain.segments)
            if not best or done.key() < best[0].key():
                best[:] = [done]
            return
        if best and chain.cost + bound[position] > best[0].cost * (1.0 + _BOUND_SLACK):
            return
        for cand in pricing.covering[position]:
            if cand.server_id == chain.last:
                continue
            entered = pricing.enter(chain.cost, chain.last, cand)
            # longest segments first: few-hop routes come early and prune the rest
            for end in range(cand.blocks.end, position, -1):
                cost = pricing.compute(entered, cand, end - position)
                visit(chain.extend(cost, cand.server_id, BlockRange(position, end)), end)

    visit(_Chain(0.0, ()), query.span.start)
    return _to_route(best, query)


def _extend_all(
    pricing: Pricing, chain: _Chain, position: int, frontier: dict[int, dict[str, _Chain]]
) -> None:
    """Offers every one-segment extension of `chain` (which ends at `position`)."""
    for cand in pricing.covering[position]:
        if cand.server_id == chain.last:
            continue
        entered = pricing.enter(chain.cost, chain.last, cand)
        exits = pricing.exits[cand.server_id]
        for end in exits[bisect.bisect_right(exits, position) :]:
            cost = pricing.compute(entered, cand, end - position)
            at_end = frontier[end]
            incumbent = at_end.get(cand.server_id)
            # most offers lose on cost alone: build the chain and its key only if needed
            if incumbent is not None and cost > incumbent.cost:
                continue
            offer = chain.extend(cost, cand.server_id, BlockRange(position, end))
            if incumbent is None or cost < incumbent.cost or offer.key() < incumbent.key():
                at_end[cand.server_id] = offer


def _best(chains: Iterable[_Chain], width: int) -> list[_Chain]:
    return sorted(chains, key=_Chain.key)[:width]


def _lower_bounds(pricing: Pricing) -> dict[int, float]:
    """bound[p]: a price no completion of a chain ending at block p can beat.

    The same chain prices, with each hop into a server replaced by the cheapest hop
    into it from anywhere: a relaxation, so the bound never exceeds the true price.
    """
    cands = list(pricing.by_id.values())
    sources: list[str | None] = [None, *pricing.by_id]
    cheapest_in = {
        c.server_id: min(pricing.enter(0.0, s, c) for s in sources if s != c.server_id)
        for c in cands
    }
    span = pricing.query.span
    bound: dict[int, float] = {}
    for start in range(span.end - 1, span.start - 1, -1):
        options = []
        for cand in pricing.covering[start]:
            for end in range(start + 1, cand.blocks.end + 1):
                rest = pricing.finish(0.0, cand.server_id) if end == span.end else bound[end]
                work = pricing.compute(cheapest_in[cand.server_id], cand, end - start)
                options.append(work + rest)
        bound[start] = min(options)
    return bound


def _to_route(best: list[_Chain], query: RouteQuery) -> Route:
    if not best:
        # unreachable: Pricing has checked that every block is held, and then a chain
        # that ends each segment at its server's last block always completes
        raise NoRoute(f"no chain covers {query.span} of {query.model}", model=query.model)
    return Route(segments=best[0].segments, expected_step_s=best[0].cost)
