"""Routes for batch forward/backward passes, spreading load by forward throughput.

Inference steps are latency-bound and take the cheapest chain (`search`). Batch
forward and backward passes are throughput-bound: sending every request down the same
cheapest chain would queue them all on a few servers. Here each route is walked from
the span's start; at every block p where the walk stands, one of the usable servers
holding p is picked with weight equal to its published forward throughput, and its
segment runs from p to the end of that server's blocks (a long segment means fewer
hops; any server holding p can do so, so a walk never gets stuck).

Two ways to pick:
- `spread_forward(..., num_requests)`: deterministic. Each decision block keeps
  smooth weighted round-robin credits (every pick adds each option's weight to its
  credit, the largest credit wins and pays back the total), so over n visits a server
  is picked close to n * weight / total times.
- `sample_forward_route(..., rng)`: one route by weighted sampling with the caller's
  `random.Random` (this module owns no randomness).

Servers with no measured forward throughput (0) get no share while a measured one is
available; if none at a block is measured, they share it equally.

Not here: latency (ignored: a forward pass moves whole batches, compute dominates),
retries and bans beyond `query.banned`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from client.routing.costs import Pricing
from client.routing.model import (
    LatencyView,
    Route,
    RouteCandidate,
    RouteQuery,
    RoutingConfig,
    Segment,
)
from swarm.records import BlockRange

_Pick = Callable[[int, Sequence[RouteCandidate]], RouteCandidate]


def spread_forward(
    candidates: Sequence[RouteCandidate], query: RouteQuery, num_requests: int
) -> list[Route]:
    """Routes for `num_requests` requests, load shared by forward throughput.

    Raises `NoRoute` naming the first block of the span no usable candidate holds.
    """
    if num_requests < 0:
        raise ValueError(f"num_requests must be >= 0, got {num_requests}")
    pricing = _coverage(candidates, query)
    credits: dict[int, dict[str, float]] = {}

    def pick(block: int, options: Sequence[RouteCandidate]) -> RouteCandidate:
        return _smooth_pick(credits.setdefault(block, {}), options)

    return [_walk(pricing, pick) for _ in range(num_requests)]


def sample_forward_route(
    candidates: Sequence[RouteCandidate], query: RouteQuery, rng: random.Random
) -> Route:
    """One route drawn at random, each server weighted by its forward throughput."""
    pricing = _coverage(candidates, query)

    def pick(block: int, options: Sequence[RouteCandidate]) -> RouteCandidate:
        return rng.choices(options, weights=_weights(options))[0]

    return _walk(pricing, pick)


def _coverage(candidates: Sequence[RouteCandidate], query: RouteQuery) -> Pricing:
    # only the coverage is used: prices here are compute time, computed in _walk
    return Pricing(candidates, LatencyView(), query, RoutingConfig())


def _walk(pricing: Pricing, pick: _Pick) -> Route:
    span, tokens = pricing.query.span, pricing.query.tokens_per_step
    segments: list[Segment] = []
    seconds = 0.0
    position = span.start
    while position < span.end:
        cand = pick(position, pricing.covering[position])
        segment = Segment(cand.server_id, BlockRange(position, cand.blocks.end))
        seconds += len(segment.blocks) * tokens * _seconds_per_token(cand)
        segments.append(segment)
        position = cand.blocks.end
    return Route(segments=tuple(segments), expected_step_s=seconds)


def _seconds_per_token(cand: RouteCandidate) -> float:
    if cand.forward_tokens_per_s > 0.0:
        return 1.0 / cand.forward_tokens_per_s
    # unmeasured forward speed: the inference figure is the best estimate there is
    return cand.seconds_per_token_per_block


def _weights(options: Sequence[RouteCandidate]) -> list[float]:
    weights = [c.forward_tokens_per_s for c in options]
    if sum(weights) <= 0.0:
        return [1.0] * len(options)
    return weights


def _smooth_pick(credit: dict[str, float], options: Sequence[RouteCandidate]) -> RouteCandidate:
    """Smooth weighted round-robin over `options` (ties: first in id order)."""
    weights = _weights(options)
    for cand, weight in zip(options, weights):
        credit[cand.server_id] = credit.get(cand.server_id, 0.0) + weight
    chosen = max(options, key=lambda c: credit[c.server_id])
    credit[chosen.server_id] -= sum(weights)
    return chosen
