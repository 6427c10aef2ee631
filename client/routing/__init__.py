"""Latency-aware routing: which servers compute which blocks for a client.

Pure: no network, clocks or randomness inside; the caller passes what it knows
(candidates built from DHT entries, measured round trips, a `random.Random` where one
is wanted) and gets frozen dataclasses back.

    find_route(candidates, latency, query, config) -> Route
        beam search for the cheapest chain of segments over query.span for one
        inference step; exact when config.beam_width >= number of servers
    exhaustive_route(...)  same contract, by enumeration (the tests' reference)
    step_cost(segments, candidates, latency, query, config) -> float
        what a given chain costs (the formula is in `client.routing.costs`)
    spread_forward(candidates, query, n) -> list[Route]
    sample_forward_route(candidates, query, rng) -> Route
        batch forward/backward routes, load shared by forward throughput

Sub-range queries (query.span, query.after, query.before) find the replacement for a
failed server's blocks inside an existing chain; query.banned excludes servers.
Every search raises `swarm.errors.NoRoute` naming the first block no usable server
holds.
"""

from client.routing.costs import step_cost
from client.routing.model import (
    LatencyView,
    Route,
    RouteCandidate,
    RouteQuery,
    RoutingConfig,
    Segment,
)
from client.routing.search import exhaustive_route, find_route
from client.routing.spread import sample_forward_route, spread_forward

__all__ = [
    "LatencyView",
    "Route",
    "RouteCandidate",
    "RouteQuery",
    "RoutingConfig",
    "Segment",
    "exhaustive_route",
    "find_route",
    "sample_forward_route",
    "spread_forward",
    "step_cost",
]
