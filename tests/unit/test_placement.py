"""Block placement: the choice of a joining server's range, checked against brute force."""

from __future__ import annotations

import math
import random

import pytest

from node.placement import (
    ServerSpan,
    block_throughputs,
    choose_blocks,
    num_blocks_auto,
    placement_throughput,
    span_from_record,
    swarm_throughput,
)
from node.placement.bounds import average_bound
from node.placement.choose import best_start, stays_put
from node.placement.spans import to_units
from swarm.records import BlockRange, ServerRecord, ServerState, Throughput

GiB = 1 << 30


def span(sid: str, blocks: str, tps: float, state: ServerState = ServerState.ONLINE) -> ServerSpan:
    return ServerSpan(sid, BlockRange.parse(blocks), tps, state)


# (what it shows, servers, num_blocks, my_num_blocks, my_throughput, expected range)
CHOICES = [
    ("empty swarm: lowest start", [], 10, 4, 50.0, "0:4"),
    ("fills the gap", [span("a", "0:6", 100), span("b", "8:10", 100)], 10, 2, 50.0, "6:8"),
    ("raises the slow half", [span("a", "0:10", 100), span("b", "0:5", 50)], 10, 5, 10.0, "5:10"),
    (
        "more uncovered blocks than I hold: cover as many as I can, lowest start",
        [span("a", "0:5", 100)],
        10,
        3,
        50.0,
        "5:8",
    ),
    (
        "two holes I cannot both reach: cover the longer one",
        [span("a", "0:4", 100), span("b", "5:8", 100)],
        10,
        2,
        50.0,
        "8:10",
    ),
    (
        "minimum cannot rise: lift the next-slowest blocks",
        # Blocks 0 and 9 (10 each) are too far apart for one range of 3: every start
        # leaves the minimum at 10. Covering 7:10 also lifts block 8 (15), 0:3 does not.
        [span("a", "0:1", 10), span("b", "1:8", 60), span("c", "8:9", 15), span("d", "9:10", 10)],
        10,
        3,
        50.0,
        "7:10",
    ),
    (
        "DRAINING and OFFLINE servers carry nothing",
        [
            span("a", "0:5", 100),
            span("b", "5:10", 100, ServerState.DRAINING),
            span("c", "5:10", 100, ServerState.OFFLINE),
        ],
        10,
        5,
        50.0,
        "5:10",
    ),
    (
        "JOINING servers count",
        [span("a", "0:5", 100), span("b", "5:10", 100, ServerState.JOINING)],
        10,
        5,
        50.0,
        "0:5",
    ),
    ("ranges past the model are clipped", [span("a", "5:40", 100)], 10, 5, 50.0, "0:5"),
    (
        "a forged infinite speed counts as nothing",
        [span("a", "0:5", math.inf), span("b", "5:10", 1)],
        10,
        5,
        50.0,
        "0:5",
    ),
    ("I hold the whole model", [span("a", "0:10", 100)], 10, 10, 50.0, "0:10"),
]


@pytest.mark.parametrize(
    "servers,num_blocks,mine,tps,expected",
    [c[1:] for c in CHOICES],
    ids=[c[0] for c in CHOICES],
)
def test_choose_blocks_table(
    servers: list[ServerSpan], num_blocks: int, mine: int, tps: float, expected: str
) -> None:
    assert choose_blocks(servers, num_blocks, mine, tps) == BlockRange.parse(expected)


def test_exclude_ignores_my_stale_record() -> None:
    swarm = [span("me", "0:5", 1000), span("a", "5:10", 100)]
    assert choose_blocks(swarm, 10, 5, 50.0) == BlockRange(5, 10)
    assert choose_blocks(swarm, 10, 5, 50.0, exclude="me") == BlockRange(0, 5)


@pytest.mark.parametrize("mine", [0, 11, -1])
def test_choose_blocks_rejects_impossible_sizes(mine: int) -> None:
    with pytest.raises(ValueError):
        choose_blocks([], 10, mine, 1.0)


def brute_force_start(totals: list[int], length: int, units: int) -> int:
    """The documented objective, spelled out: leximin of the new totals, then lowest start."""

    def key(s: int) -> tuple[list[int], int]:
        new = [t + units if s <= b < s + length else t for b, t in enumerate(totals)]
        return sorted(new), -s

    return max(range(len(totals) - length + 1), key=key)


def random_swarm(rng: random.Random, num_blocks: int, n: int) -> list[ServerSpan]:
    out = []
    for i in range(n):
        start = rng.randrange(num_blocks)
        end = rng.randint(start + 1, num_blocks)
        # Small integer speeds make exact ties (the hard cases) common.
        out.append(span(f"s{i}", f"{start}:{end}", rng.randint(0, 4)))
    return out


def test_matches_exhaustive_search_on_small_swarms() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        num_blocks = rng.randint(1, 9)
        servers = random_swarm(rng, num_blocks, rng.randint(0, 6))
        mine, tps = rng.randint(1, num_blocks), rng.randint(0, 4)
        totals = [to_units(t) for t in block_throughputs(servers, num_blocks)]
        chosen = choose_blocks(servers, num_blocks, mine, tps)
        assert chosen.start == brute_force_start(totals, mine, to_units(tps)), (servers, mine)
        # The choice never lowers the minimum and reaches the best minimum there is.
        after = swarm_throughput([*servers, ServerSpan("me", chosen, tps)], num_blocks)
        best = max(
            swarm_throughput([*servers, ServerSpan("me", BlockRange(s, s + mine), tps)], num_blocks)
            for s in range(num_blocks - mine + 1)
        )
        assert after == best >= swarm_throughput(servers, num_blocks)


def test_choice_does_not_depend_on_record_order() -> None:
    rng = random.Random(3)
    for _ in range(200):
        servers = [
            ServerSpan(s.server_id, s.blocks, rng.uniform(0.1, 300.0))
            for s in random_swarm(rng, 30, 40)
        ]
        first = choose_blocks(servers, 30, 7, 123.4)
        rng.shuffle(servers)
        assert choose_blocks(servers, 30, 7, 123.4) == first


def test_stays_put_is_sound_and_useful() -> None:
    """True only when best_start would keep the start; and True often enough to matter."""
    rng = random.Random(11)
    hits = 0
    for _ in range(5000):
        n = rng.randint(1, 12)
        length = rng.randint(1, n)
        start = rng.randrange(n - length + 1)
        units = rng.randint(0, 5)
        without = [rng.randint(0, 8) for _ in range(n)]
        with_me = [t + units if start <= b < start + length else t for b, t in enumerate(without)]
        if stays_put(with_me, start, length, units):
            hits += 1
            assert best_start(without, length, units, stay=start) == start
    assert hits > 500


def test_best_start_prefers_staying_on_an_exact_tie() -> None:
    assert best_start([0, 0, 0, 0], 2, 5) == 0
    assert best_start([0, 0, 0, 0], 2, 5, stay=2) == 2
    assert best_start([0, 0, 9, 9], 2, 5, stay=2) == 0  # staying is worse: no tie


@pytest.mark.parametrize(
    "available,per_block,reserved,num_blocks,expected",
    [
        (10 * GiB, GiB, 2 * GiB, 30, 8),
        (10 * GiB, GiB, 0, 30, 10),
        (10 * GiB, GiB, 2 * GiB, 5, 5),  # never more than the model has
        (3 * GiB - 1, GiB, GiB, 30, 1),  # partial blocks do not count
        (2 * GiB, GiB, GiB, 30, 1),  # exactly one fits
    ],
)
def test_num_blocks_auto(
    available: int, per_block: int, reserved: int, num_blocks: int, expected: int
) -> None:
    assert num_blocks_auto(available, per_block, reserved, num_blocks) == expected


@pytest.mark.parametrize(
    "available,per_block,reserved,num_blocks,message",
    [
        (GiB, GiB, 1, 30, "not enough memory for one block"),
        (GiB, GiB, 2 * GiB, 30, "not enough memory for one block"),
        (GiB, 0, 0, 30, "bytes_per_block"),
        (-1, GiB, 0, 30, "negative"),
        (GiB, GiB, 0, 0, "at least one block"),
    ],
)
def test_num_blocks_auto_errors(
    available: int, per_block: int, reserved: int, num_blocks: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        num_blocks_auto(available, per_block, reserved, num_blocks)


def test_block_and_swarm_throughput() -> None:
    servers = [span("a", "0:3", 10.5), span("b", "2:4", 1.25), span("c", "0:4", 7, ServerState.DRAINING)]
    assert block_throughputs(servers, 5) == [10.5, 10.5, 11.75, 1.25, 0.0]
    assert swarm_throughput(servers, 5) == 0.0
    assert swarm_throughput(servers, 4) == 1.25


@pytest.mark.parametrize(
    "throughput,expected",
    [
        (Throughput(inference_tokens_per_s=5, forward_tokens_per_s=300, network_tokens_per_s=90), 90),
        (Throughput(inference_tokens_per_s=5, forward_tokens_per_s=300), 300),  # network unmeasured
        (Throughput(inference_tokens_per_s=5), 5),  # only inference measured
        (Throughput(), 0),
    ],
)
def test_placement_throughput(throughput: Throughput, expected: float) -> None:
    assert placement_throughput(throughput) == expected


def test_span_from_record() -> None:
    record = ServerRecord(
        "id1", "10.0.0.1:1", "m", BlockRange(3, 9), ServerState.JOINING,
        Throughput(forward_tokens_per_s=40, network_tokens_per_s=60),
    )
    assert span_from_record(record) == ServerSpan("id1", BlockRange(3, 9), 40, ServerState.JOINING)


def test_average_bound_holds_against_every_placement() -> None:
    """No assignment of starts beats sum(t_i * b_i) / num_blocks; tiling servers reach it."""
    rng = random.Random(13)
    for _ in range(100):
        num_blocks = rng.randint(1, 6)
        sizes = [(float(rng.randint(1, 9)), rng.randint(1, num_blocks)) for _ in range(3)]
        best = 0.0
        for a in range(num_blocks - sizes[0][1] + 1):
            for b in range(num_blocks - sizes[1][1] + 1):
                for c in range(num_blocks - sizes[2][1] + 1):
                    servers = [
                        ServerSpan(str(i), BlockRange(s, s + n), t)
                        for i, (s, (t, n)) in enumerate(zip((a, b, c), sizes))
                    ]
                    best = max(best, swarm_throughput(servers, num_blocks))
        assert best <= average_bound(sizes, num_blocks) + 1e-9
    # Reached exactly when the servers tile the model evenly.
    assert average_bound([(10.0, 3), (10.0, 3), (20.0, 6)], 6) == 30.0
    assert average_bound([(5.0, 40)], 30) == 5.0  # more blocks than the model: capped
