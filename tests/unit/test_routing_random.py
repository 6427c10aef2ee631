"""Routing on seeded random swarms, checked against the exhaustive search.

Each swarm has 3-12 servers over 6-20 blocks (a random chain guarantees coverage,
the rest of the ranges are random), client RTTs of 5-200 ms (some unknown), peer RTTs
of 2-200 ms published for ~70% of the pairs, 1-20 ms per token per block, some
servers short of cache. The narrow-beam test logs the measured cost ratios; run with
`--log-cli-level=INFO` to see them.
"""

from __future__ import annotations

import logging
import random
import statistics

import pytest

from client.routing import (
    LatencyView,
    Route,
    RouteCandidate,
    RouteQuery,
    RoutingConfig,
    exhaustive_route,
    find_route,
    step_cost,
)
from swarm.errors import NoRoute
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

NUM_SWARMS = 300


def random_ranges(rng: random.Random, num_servers: int, num_blocks: int) -> list[BlockRange]:
    ranges: list[BlockRange] = []
    position = 0
    while position < num_blocks:  # a chain that covers every block, overlapping a bit
        start = max(0, position - rng.randint(0, 3))
        position = min(num_blocks, position + rng.randint(1, 8))
        ranges.append(BlockRange(start, position))
    while len(ranges) < num_servers:
        start = rng.randrange(num_blocks)
        ranges.append(BlockRange(start, rng.randint(start + 1, num_blocks)))
    rng.shuffle(ranges)
    return ranges


def random_swarm(rng: random.Random) -> tuple[list[RouteCandidate], LatencyView, int]:
    """Candidates, latencies and the number of blocks of one random swarm."""
    num_blocks = rng.randint(6, 20)
    ranges = random_ranges(rng, rng.randint(3, 12), num_blocks)
    ids = [f"s{i:02d}" for i in range(len(ranges))]
    cands = [
        RouteCandidate(
            server_id=sid,
            blocks=blocks,
            seconds_per_token_per_block=rng.uniform(0.001, 0.02),
            free_cache_tokens=rng.choice([0, 512, 4096]),
            forward_tokens_per_s=rng.uniform(100.0, 1000.0),
        )
        for sid, blocks in zip(ids, ranges)
    ]
    client = {s: rng.uniform(0.005, 0.2) for s in ids if rng.random() < 0.9}
    peers = {a: {b: rng.uniform(0.002, 0.2) for b in ids if rng.random() < 0.7} for a in ids}
    return cands, LatencyView(client, peers), num_blocks


def random_case(seed: int) -> tuple[list[RouteCandidate], LatencyView, RouteQuery, bool]:
    rng = random.Random(seed)
    cands, latency, num_blocks = random_swarm(rng)
    query = RouteQuery(
        BlockRange(0, num_blocks),
        session_tokens=rng.choice([0, 1024]),
        tokens_per_step=rng.choice([1, 1, 4]),
    )
    return cands, latency, query, rng.random() < 0.7


def test_wide_beam_equals_exhaustive_search() -> None:
    for seed in range(NUM_SWARMS):
        cands, latency, query, chained = random_case(seed)
        config = RoutingConfig(beam_width=len(cands), chained=chained)
        beam = find_route(cands, latency, query, config)
        reference = exhaustive_route(cands, latency, query, config)
        assert beam.expected_step_s == reference.expected_step_s, f"seed {seed}"
        assert beam == reference, f"seed {seed}"
        assert beam.span == query.span
        assert beam.expected_step_s == step_cost(beam.segments, cands, latency, query, config)


def test_wide_beam_equals_exhaustive_on_sub_ranges_with_bans() -> None:
    """Replacement routes: a random gap, random bans, random endpoints on either side."""
    for seed in range(NUM_SWARMS):
        cands, latency, full, chained = random_case(seed)
        rng = random.Random(-seed)
        start = rng.randrange(len(full.span))
        span = BlockRange(start, rng.randint(start + 1, full.span.end))
        ids = [c.server_id for c in cands]
        query = RouteQuery(
            span,
            session_tokens=full.session_tokens,
            banned=frozenset(rng.sample(ids, rng.randint(0, 2))),
            after=rng.choice([None, *ids]) if span.start > 0 else None,
            before=rng.choice([None, *ids]) if span.end < full.span.end else None,
        )
        config = RoutingConfig(beam_width=len(cands), chained=chained)
        try:
            beam = find_route(cands, latency, query, config)
        except NoRoute as e:
            with pytest.raises(NoRoute) as caught:
                exhaustive_route(cands, latency, query, config)
            assert caught.value.block == e.block is not None
            assert not any(e.block in c.blocks for c in cands if c.server_id not in query.banned)
            continue
        assert beam == exhaustive_route(cands, latency, query, config), f"seed {seed}"
        assert beam.span == span
        assert not set(beam.server_ids) & query.banned


def measure_narrow_beam(width: int) -> list[float]:
    """Cost of the narrow beam's route over the optimum, one ratio per random swarm."""
    ratios = []
    for seed in range(NUM_SWARMS):
        cands, latency, query, chained = random_case(seed)
        narrow = find_route(cands, latency, query, RoutingConfig(width, chained=chained))
        best = find_route(cands, latency, query, RoutingConfig(len(cands), chained=chained))
        ratios.append(narrow.expected_step_s / best.expected_step_s)
    return ratios


@pytest.mark.parametrize("width", [2, 3])
def test_narrow_beam_is_within_five_percent_on_average(width: int) -> None:
    ratios = measure_narrow_beam(width)
    mean, worst = statistics.mean(ratios), max(ratios)
    suboptimal = sum(r > 1.0 for r in ratios)
    logger.info(
        "beam width %d over %d random swarms: cost / optimal mean %.5f, worst %.4f, "
        "%d suboptimal",
        width,
        len(ratios),
        mean,
        worst,
        suboptimal,
    )
    assert min(ratios) >= 1.0  # never better than the optimum (that would be a bug)
    assert mean <= 1.05


def test_width_one_beam_is_measurably_worse() -> None:
    """The random swarms are hard enough for the beam width to matter."""
    assert max(measure_narrow_beam(1)) > 1.05


def test_routes_are_valid_chains() -> None:
    for seed in range(NUM_SWARMS):
        cands, latency, query, chained = random_case(seed)
        route: Route = find_route(cands, latency, query, RoutingConfig(2, chained=chained))
        by_id = {c.server_id: c for c in cands}
        position = 0
        for prev, seg in zip((None, *route.server_ids), route.segments):
            assert seg.blocks.start == position and by_id[seg.server_id].blocks.covers(seg.blocks)
            assert seg.server_id != prev
            position = seg.blocks.end
        assert position == query.span.end
