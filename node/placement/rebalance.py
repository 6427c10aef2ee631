"""Whether a serving server should move to other blocks: the rebalancing decision.

Each server asks this every balance period (the caller adds jitter so that servers do
not all ask at once). `should_move` answers with the range to move to, or None.

The danger is oscillation: server A moves to the slowest blocks, which leaves its old
blocks slowest, so B moves there, and so on, each move costing a reload. So a move is
judged by where the swarm would *settle* after it, not by the first step. With
cur = the swarm's throughput now and q = balance_quality:
  1. Only an ONLINE server moves (a JOINING one is still loading its blocks).
  2. Take me out and place me greedily (`best_start`, preferring my current start on
     an exact tie). Already there: stay. (`stays_put` answers most servers cheaply.)
  3. A move must reach needed = floor(cur / q). No placement beats the average load
     per block (sum of throughput x blocks / num_blocks): if that is not above
     `needed`, stay.
  4. While I reload, my blocks have only the other ONLINE servers (JOINING ones count
     for where to go, but carry no traffic yet). If the slowest of my blocks would
     fall below cur, stay for now: my reload would become the swarm's bottleneck (or
     leave a block with no server, if I am its only one). In simulation this rule cut
     migrations by a third and raised throughput: without it, servers left blocks whose
     new servers were still loading.
  5. With me at the new start, let every other server re-choose greedily, in id order,
     round after round until no one moves or `max_rounds` is reached. Move if the
     settled swarm's throughput is above `needed`; when cur is 0 (some block has no
     server), move if the settled swarm has fewer uncovered blocks.
Step 5 terminates even without the round bound: every re-choice that moves a server
strictly raises the sorted totals vector in lexicographic order (the objective of
`best_start`), and there are finitely many placements. A re-choice never lowers the
minimum (staying was an option), so the cascade stops as soon as it passes `needed`,
and a cascade cut short by `max_rounds` can only under-state the gain: the bound makes
decisions more conservative, never less.

Decisions are deterministic: integer totals, servers in id order, no randomness or
clocks. Not here: the loop, its timing and jitter, the actual reload (the node does those).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from node.placement.choose import best_start, stays_put
from node.placement.spans import (
    Placed,
    ServerSpan,
    add_span,
    block_totals,
    check_num_blocks,
    placed_servers,
    uncovered,
)
from swarm.records import BlockRange, ServerState

DEFAULT_BALANCE_QUALITY = 0.95
"""Move when the settled swarm would be over 1/0.95 = 1.053x faster.

Petals uses 0.75. In `scripts/simulate` (200 servers, churn 0.5/h, 60 s reloads) 0.75
never moves: churn keeps the swarm within 1.33x of its best. 0.95 holds the swarm
about 2 points of the bound above greedy-join-only at about 0.15-0.25 moves per
server-hour; 0.97 gains a little more at twice the moves. With reloads of 5 minutes the
gain shrinks to about zero: lower it for big, slow-to-load models.
"""

MOVABLE_STATES = frozenset({ServerState.ONLINE})
"""Only a serving server moves; a JOINING one is still loading (moving wastes the load)."""
ONLINE_ONLY = MOVABLE_STATES

DEFAULT_MAX_ROUNDS = 10
"""Rounds of re-choosing in the cascade (each server once per round)."""


def should_move(
    servers: Iterable[ServerSpan],
    me: ServerSpan,
    num_blocks: int,
    balance_quality: float = DEFAULT_BALANCE_QUALITY,
    *,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> BlockRange | None:
    """The range `me` should move to, or None to stay (see the module docstring).

    `servers` is the swarm as published; an entry with `me`'s id is replaced by `me`
    (the node knows its own state better than the DHT). `balance_quality` in (0, 1]:
    1 moves for any gain, lower values need a larger gain.
    """
    check_num_blocks(num_blocks)
    if not 0 < balance_quality <= 1:
        raise ValueError(f"balance_quality must be in (0, 1], got {balance_quality}")
    mine = placed_servers([me], num_blocks, states=MOVABLE_STATES)
    if not mine:
        return None  # not online, or only blocks the model lacks: nothing to rebalance
    me_p, pool = mine[0], list(servers)
    others = placed_servers(pool, num_blocks, exclude=me.server_id)
    base = block_totals(others, num_blocks)
    current = list(base)
    add_span(current, me_p.start, me_p.length, me_p.units)
    cur = min(current)
    if stays_put(current, me_p.start, me_p.length, me_p.units):
        return None
    target = best_start(base, me_p.length, me_p.units, stay=me_p.start)
    if target == me_p.start:
        return None
    # Moving pays off only above this (integers: "new > needed" is exact).
    needed = math.floor(cur / balance_quality) if cur > 0 else None
    if needed is not None and average_units([*others, me_p], num_blocks) <= needed:
        return None  # not even a perfect spread of the load would be enough
    if needed is not None and _left_behind(pool, me_p, num_blocks) < cur:
        return None
    settled = list(base)
    add_span(settled, target, me_p.length, me_p.units)
    settle(others, settled, max_rounds, enough=needed)
    if needed is None and uncovered(settled) >= uncovered(current):
        return None
    if needed is not None and min(settled) <= needed:
        return None
    return BlockRange(target, target + me_p.length)


def _left_behind(servers: list[ServerSpan], me: Placed, num_blocks: int) -> int:
    """The slowest of my blocks without me, counting only servers that serve now (units).

    While I reload, my blocks have only the others; servers still loading (JOINING) count
    towards where I should go, but they do not carry my blocks' traffic yet.
    """
    online = placed_servers(servers, num_blocks, exclude=me.server_id, states=ONLINE_ONLY)
    return min(block_totals(online, num_blocks)[me.start : me.start + me.length])


def settle(
    placed: Sequence[Placed], totals: list[int], max_rounds: int, enough: int | None = None
) -> list[int]:
    """Lets each of `placed` re-choose greedily, in order, until stable; returns starts.

    `totals` must include every server of `placed` (and any fixed ones) and is updated
    in place; `placed` itself is not changed (it is frozen). Stops early once the
    minimum of `totals` exceeds `enough`: re-choices never lower the minimum (staying
    is always an option), so the answer to "will it beat `enough`?" cannot change.
    """
    starts = [p.start for p in placed]
    # Stable once len(placed) re-choices in a row kept their start: each saw the same
    # totals it would see again. This saves the confirming round.
    calm, budget = 0, max_rounds * len(placed)
    for step in range(budget):
        if calm >= len(placed):
            break
        i = step % len(placed)
        p = placed[i]
        if stays_put(totals, starts[i], p.length, p.units):
            calm += 1
            continue
        add_span(totals, starts[i], p.length, -p.units)
        new = best_start(totals, p.length, p.units, stay=starts[i])
        add_span(totals, new, p.length, p.units)
        if new == starts[i]:
            calm += 1
            continue
        starts[i], calm = new, 0
        if enough is not None and min(totals) > enough:
            break
    return starts


def average_units(placed: Iterable[Placed], num_blocks: int) -> int:
    """Sum of units x blocks over num_blocks, rounded down: no placement's minimum beats it.

    The blocks' totals add up to exactly this sum, and a minimum is at most the mean; the
    totals are integers, so the minimum is at most the mean rounded down.
    """
    return sum(p.units * p.length for p in placed) // num_blocks
