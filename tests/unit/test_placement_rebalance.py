"""The rebalancing decision: moves when the swarm is skewed, never oscillates."""

from __future__ import annotations

import random

import pytest

from node.placement import ServerSpan, choose_blocks, should_move, swarm_throughput
from node.placement.rebalance import average_units, settle
from node.placement.spans import block_totals, placed_servers
from swarm.records import BlockRange, ServerState

ONLINE, JOINING, DRAINING = ServerState.ONLINE, ServerState.JOINING, ServerState.DRAINING


def span(sid: str, blocks: str, tps: float, state: ServerState = ONLINE) -> ServerSpan:
    return ServerSpan(sid, BlockRange.parse(blocks), tps, state)


# (what it shows, swarm, my id, balance_quality, expected target or None)
DECISIONS = [
    (
        "three on the first half, one on the second: move",
        [span("a", "0:5", 100), span("b", "0:5", 100), span("c", "0:5", 100), span("d", "5:10", 100)],
        "a",
        0.75,
        "5:10",
    ),
    (
        "balanced: stay",
        [span("a", "0:5", 100), span("b", "0:5", 100), span("c", "5:10", 100), span("d", "5:10", 100)],
        "a",
        1.0,
        None,
    ),
    (
        "already where greedy would put me: stay",
        [span("a", "5:10", 100), span("b", "0:5", 300), span("c", "5:10", 100)],
        "a",
        1.0,
        None,
    ),
    (
        "the gain (100 -> 120 tok/s) is below the threshold (1.33x): stay",
        [span("a", "0:5", 50), span("b", "0:5", 120), span("c", "5:10", 100)],
        "a",
        0.75,
        None,
    ),
    (
        "the same gain passes a stricter quality (1.11x)",
        [span("a", "0:5", 50), span("b", "0:5", 120), span("c", "5:10", 100)],
        "a",
        0.9,
        "5:10",
    ),
    (
        "blocks 5:10 uncovered: cover them",
        [span("a", "0:5", 100), span("b", "0:5", 100)],
        "a",
        0.75,
        "5:10",
    ),
    (
        "my blocks' other server is still loading: wait",
        [span("a", "0:5", 100), span("j", "0:5", 1000, JOINING), span("b", "5:10", 100)],
        "a",
        0.75,
        None,
    ),
    (
        "... and once it serves, move",
        [span("a", "0:5", 100), span("j", "0:5", 1000), span("b", "5:10", 100)],
        "a",
        0.75,
        "5:10",
    ),
    (
        "a JOINING server does not move (it is still loading)",
        [span("a", "0:5", 100, JOINING), span("b", "0:5", 100), span("c", "0:5", 100), span("d", "5:10", 100)],
        "a",
        0.75,
        None,
    ),
    (
        "a DRAINING server does not move",
        [span("a", "0:5", 100, DRAINING), span("b", "0:5", 100), span("c", "0:5", 100), span("d", "5:10", 100)],
        "a",
        0.75,
        None,
    ),
]


@pytest.mark.parametrize(
    "swarm,me,quality,expected", [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS]
)
def test_should_move_table(
    swarm: list[ServerSpan], me: str, quality: float, expected: str | None
) -> None:
    mine = next(s for s in swarm if s.server_id == me)
    got = should_move(swarm, mine, 10, quality)
    assert got == (BlockRange.parse(expected) if expected else None)


def test_the_cascade_is_what_justifies_a_move() -> None:
    """My move alone leaves the swarm as slow as before (8:12 stays at 100); after b
    follows, it is twice as fast. A rule that looked only at my own step would stay."""
    swarm = [
        span("a", "0:4", 100),
        span("b", "0:4", 100),
        span("c", "0:4", 100),
        span("d", "0:4", 100),
        span("e", "4:8", 100),
        span("f", "8:12", 100),
    ]
    target = should_move(swarm, swarm[0], 12, 0.75)
    assert target == BlockRange(4, 8)
    first_step = [ServerSpan("a", target, 100), *swarm[1:]]
    assert swarm_throughput(first_step, 12) == swarm_throughput(swarm, 12) == 100
    assert should_move(first_step, first_step[1], 12, 0.75) == BlockRange(8, 12)


def test_my_entry_in_the_records_is_replaced_by_me() -> None:
    # The DHT still says a serves 0:5 (three servers there); a serves 5:10 by now.
    records = [span("a", "0:5", 100), span("b", "0:5", 100), span("c", "0:5", 100), span("d", "5:10", 100)]
    assert should_move(records, span("a", "5:10", 100), 10, 1.0) is None
    assert should_move(records, span("a", "0:5", 100), 10, 1.0) == BlockRange(5, 10)


def test_decision_does_not_depend_on_record_order() -> None:
    rng = random.Random(5)
    for _ in range(50):
        swarm = greedy_swarm(rng, 25, 20)
        me = rng.choice(swarm)
        first = should_move(swarm, me, 20, 1.0)
        rng.shuffle(swarm)
        assert should_move(swarm, me, 20, 1.0) == first


@pytest.mark.parametrize("quality", [0.0, -0.5, 1.01])
def test_rejects_bad_balance_quality(quality: float) -> None:
    with pytest.raises(ValueError):
        should_move([], span("a", "0:5", 1), 10, quality)


def greedy_swarm(rng: random.Random, n: int, num_blocks: int) -> list[ServerSpan]:
    """n heterogeneous servers, each joined greedily in turn (as a fresh swarm forms)."""
    swarm: list[ServerSpan] = []
    for i in range(n):
        tps, size = rng.lognormvariate(4.0, 0.8), rng.randint(2, num_blocks // 2)
        swarm.append(ServerSpan(f"s{i:03d}", choose_blocks(swarm, num_blocks, size, tps), tps))
    return swarm


def sorted_totals(swarm: list[ServerSpan], num_blocks: int) -> list[int]:
    return sorted(block_totals(placed_servers(swarm, num_blocks), num_blocks))


def apply_until_stable(
    swarm: list[ServerSpan], num_blocks: int, quality: float, max_sweeps: int = 50
) -> tuple[list[ServerSpan], int, int]:
    """Every server asks in turn and moves when told, sweep after sweep, until a whole
    sweep moves no one. Returns the swarm, the moves made and the sweeps it took."""
    moves = 0
    for sweep in range(1, max_sweeps + 1):
        moved = False
        for i, me in enumerate(swarm):
            target = should_move(swarm, me, num_blocks, quality)
            if target is None:
                continue
            before = sorted_totals(swarm, num_blocks)
            swarm[i] = ServerSpan(me.server_id, target, me.throughput)
            # Each move strictly raises the sorted totals (leximin): no cycle is possible.
            assert sorted_totals(swarm, num_blocks) > before
            moves, moved = moves + 1, True
        if not moved:
            return swarm, moves, sweep
    raise AssertionError(f"no stable state after {max_sweeps} sweeps ({moves} moves)")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quality", [1.0, 0.9, 0.75])
def test_repeated_decisions_settle_and_then_make_no_moves(seed: int, quality: float) -> None:
    rng = random.Random(seed)
    swarm = greedy_swarm(rng, 40, 24)
    # Skew it: a third of the servers leave, all from the front half of the model.
    swarm = [s for i, s in enumerate(swarm) if i % 3 or s.blocks.start >= 12]
    before = swarm_throughput(swarm, 24)
    swarm, moves, sweeps = apply_until_stable(swarm, 24, quality)
    assert swarm_throughput(swarm, 24) >= before
    # Stable means stable: asking again, in any order, moves no one.
    order = list(swarm)
    rng.shuffle(order)
    assert all(should_move(swarm, me, 24, quality) is None for me in order)


def test_rebalancing_repairs_a_skewed_swarm() -> None:
    rng = random.Random(1)
    swarm = greedy_swarm(rng, 60, 30)
    ceiling = average_units(placed_servers(swarm, 30), 30) / 1000
    skewed = [ServerSpan(s.server_id, BlockRange(0, len(s.blocks)), s.throughput) for s in swarm]
    assert swarm_throughput(skewed, 30) == 0  # everyone at the front: the tail is uncovered
    repaired, moves, _ = apply_until_stable(skewed, 30, 0.9)
    assert swarm_throughput(repaired, 30) >= 0.8 * ceiling
    assert moves < 3 * len(swarm)


def test_settle_reaches_a_greedy_equilibrium() -> None:
    rng = random.Random(2)
    swarm = greedy_swarm(rng, 30, 20)
    placed = placed_servers(swarm, 20)
    totals = block_totals(placed, 20)
    starts = settle(placed, totals, max_rounds=100)
    assert totals == block_totals([p._replace(start=s) for p, s in zip(placed, starts)], 20)
    # Nobody wants to move any more: one more round changes nothing.
    assert settle([p._replace(start=s) for p, s in zip(placed, starts)], totals, 1) == starts
