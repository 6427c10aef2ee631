"""Batch forward routes: load shared across servers in proportion to forward throughput."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from client.routing import (
    Route,
    RouteCandidate,
    RouteQuery,
    sample_forward_route,
    spread_forward,
)
from swarm.errors import NoRoute
from swarm.records import BlockRange
from tests.unit.test_routing_random import random_swarm


def fwd(server_id: str, start: int, end: int, tps: float) -> RouteCandidate:
    return RouteCandidate(server_id, BlockRange(start, end), 0.01, forward_tokens_per_s=tps)


def chains(routes: list[Route]) -> Counter[str]:
    return Counter(" -> ".join(str(s) for s in r.segments) for r in routes)


@pytest.mark.parametrize(
    ("servers", "n", "expected"),
    [
        # two full copies at 3:1
        ([("a", 0, 8, 300.0), ("b", 0, 8, 100.0)], 400, {"a[0:8]": 300, "b[0:8]": 100}),
        # equal speeds: alternate
        ([("a", 0, 8, 50.0), ("b", 0, 8, 50.0)], 5, {"a[0:8]": 3, "b[0:8]": 2}),
        # unmeasured servers share equally when nobody is measured ...
        ([("a", 0, 8, 0.0), ("b", 0, 8, 0.0)], 4, {"a[0:8]": 2, "b[0:8]": 2}),
        # ... and get nothing next to a measured one
        ([("a", 0, 8, 0.0), ("b", 0, 8, 10.0)], 4, {"b[0:8]": 4}),
        # a (0:10) and b (0:20) split block 0 evenly; after a, c (10:20) and b split 2:1
        (
            [("a", 0, 10, 100.0), ("b", 0, 20, 100.0), ("c", 10, 20, 200.0)],
            300,
            {"b[0:20]": 150, "a[0:10] -> c[10:20]": 100, "a[0:10] -> b[10:20]": 50},
        ),
    ],
)
def test_spread_forward_proportions(
    servers: list[tuple[str, int, int, float]], n: int, expected: dict[str, int]
) -> None:
    num_blocks = max(s[2] for s in servers)
    routes = spread_forward([fwd(*s) for s in servers], RouteQuery(BlockRange(0, num_blocks)), n)
    assert chains(routes) == Counter(expected)


@pytest.mark.parametrize(
    "weights", [(3.0, 1.0), (1.0, 1.0, 1.0), (5.0, 2.0, 1.0), (0.7, 0.2, 0.1)]
)
def test_spread_forward_stays_within_one_request_of_the_share(weights: tuple[float, ...]) -> None:
    cands = [fwd(f"s{i}", 0, 4, w) for i, w in enumerate(weights)]
    routes = spread_forward(cands, RouteQuery(BlockRange(0, 4)), 200)
    total = sum(weights)
    for n in range(1, len(routes) + 1):  # at every prefix, not just at the end
        counts = Counter(r.server_ids[0] for r in routes[:n])
        for i, w in enumerate(weights):
            assert abs(counts[f"s{i}"] - n * w / total) < 1.0 + 1e-9


def test_sample_forward_route_follows_throughput() -> None:
    cands = [fwd("a", 0, 8, 300.0), fwd("b", 0, 8, 100.0), fwd("c", 0, 4, 100.0)]
    cands.append(fwd("d", 4, 8, 1.0))
    rng = random.Random(7)
    draws = [sample_forward_route(cands, RouteQuery(BlockRange(0, 8)), rng) for _ in range(4000)]
    first = Counter(r.server_ids[0] for r in draws)
    assert first["a"] / 4000 == pytest.approx(0.6, abs=0.03)
    assert first["b"] / 4000 == pytest.approx(0.2, abs=0.03)
    assert first["c"] / 4000 == pytest.approx(0.2, abs=0.03)
    # after c (0:4), block 4 is held by a, b and d at 300 : 100 : 1
    after_c = Counter(r.server_ids[1] for r in draws if r.server_ids[0] == "c")
    assert after_c["a"] / sum(after_c.values()) == pytest.approx(300 / 401, abs=0.05)
    again = random.Random(7)
    assert sample_forward_route(cands, RouteQuery(BlockRange(0, 8)), again) == draws[0]


def test_forward_routes_skip_banned_and_name_missing_blocks() -> None:
    cands = [fwd("a", 0, 8, 300.0), fwd("b", 0, 5, 100.0), fwd("c", 5, 8, 100.0)]
    routes = spread_forward(cands, RouteQuery(BlockRange(0, 8), banned=frozenset({"a"})), 3)
    assert chains(routes) == Counter({"b[0:5] -> c[5:8]": 3})
    query = RouteQuery(BlockRange(0, 8), banned=frozenset({"a", "c"}), model="m")
    with pytest.raises(NoRoute) as caught:
        spread_forward(cands, query, 1)
    assert caught.value.block == 5
    with pytest.raises(NoRoute):
        sample_forward_route(cands, query, random.Random(0))


def test_forward_route_time_is_compute_only() -> None:
    cands = [fwd("a", 0, 4, 100.0), RouteCandidate("b", BlockRange(4, 6), 0.5)]
    (route,) = spread_forward(cands, RouteQuery(BlockRange(0, 6), tokens_per_step=10), 1)
    # a: 4 blocks * 10 tokens / 100 tokens/s; b unmeasured: its inference figure
    assert route.expected_step_s == pytest.approx(0.4 + 2 * 10 * 0.5)


def test_forward_routes_on_random_swarms_are_valid_chains() -> None:
    for seed in range(100):
        cands, _, num_blocks = random_swarm(random.Random(seed))
        by_id = {c.server_id: c for c in cands}
        query = RouteQuery(BlockRange(0, num_blocks))
        routes = spread_forward(cands, query, 5)
        routes.append(sample_forward_route(cands, query, random.Random(seed)))
        for route in routes:
            assert route.span == query.span
            assert all(by_id[s.server_id].blocks.covers(s.blocks) for s in route.segments)
