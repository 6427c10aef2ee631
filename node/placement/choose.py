"""Where a server should sit: the range that helps the swarm most, and how many blocks fit.

The objective. Adding a server of throughput c to blocks [s, s + L) raises those blocks'
totals by c. Among all starts s in 0..num_blocks-L, `best_start` picks the one whose
resulting per-block totals are best in *leximin* order: sorted ascending and compared
lexicographically, larger wins. So it
  1. maximises the swarm's throughput (the minimum, the first element); then
  2. covers as many uncovered blocks as it can (fewer zeros sort later: bigger vector),
     which matters while the swarm has more uncovered blocks than the server can hold;
  3. then lifts the second-slowest block, the third, ... (a tie on the minimum is common:
     the bottleneck is often a block the server cannot reach from any start);
  4. remaining ties: the server's current start (`stay`), then the lowest start.
Ties in 4 are exact: totals are integers (see `node.placement.spans`).

Cost: computing totals from the records is O(servers + num_blocks); then O(num_blocks
* L) for the minimum of each candidate (prefix and suffix minima outside the window, a
slice minimum inside), plus a sort of the tied windows' span per candidate that ties
on the minimum. `stays_put` answers "would a placed server keep its start?" in
O(num_blocks) for most servers, which keeps the rebalancing cascade cheap. No clocks,
randomness or I/O: the same records give the same range.

`num_blocks_auto` sizes a server for `--num-blocks auto`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from node.placement.spans import (
    ServerSpan,
    block_totals,
    check_num_blocks,
    placed_servers,
    to_units,
)
from swarm.records import BlockRange


def best_start(totals: Sequence[int], length: int, units: int, stay: int | None = None) -> int:
    """The start of the best window of `length` blocks for a server of `units`.

    See the module docstring for the order. `totals` must not include this server.
    """
    n = len(totals)
    if not 1 <= length <= n:
        raise ValueError(f"cannot place {length} blocks in a model of {n}")
    top = max(totals) + units + 1  # above every reachable value: never wins a min
    prefix = _running_min(totals, top)  # prefix[i] = min(totals[:i])
    suffix = _running_min(reversed(totals), top)[::-1]  # suffix[i] = min(totals[i:])
    values = []
    for s in range(n - length + 1):
        v = min(totals[s : s + length]) + units
        if prefix[s] < v:
            v = prefix[s]
        if suffix[s + length] < v:
            v = suffix[s + length]
        values.append(v)
    best = max(values)
    if values.count(best) == 1:
        return values.index(best)
    ties = [s for s, v in enumerate(values) if v == best]
    # Blocks outside every tied window are the same in every candidate vector, and
    # adding the same elements to two multisets does not change their leximin order:
    # compare only the span the tied windows cover.
    low, high = ties[0], ties[-1] + length
    span = totals[low:high]
    return max(ties, key=lambda s: (_leximin(span, s - low, length, units), s == stay, -s))


def _running_min(values: Iterable[int], top: int) -> list[int]:
    """[top, min of the first 1, min of the first 2, ...] of `values`.

    A plain loop with `<`: faster than accumulate(values, min), since calling the
    builtin min() with two arguments is slow, and this is the rebalancing cascade's
    hot loop.
    """
    m, out = top, [top]
    for v in values:
        if v < m:
            m = v
        out.append(m)
    return out


def _leximin(totals: Sequence[int], start: int, length: int, units: int) -> list[int]:
    """The totals with the window raised, sorted ascending (compared lexicographically)."""
    end = start + length
    raised = [t + units for t in totals[start:end]]
    return sorted([*totals[:start], *raised, *totals[end:]])


def stays_put(totals_with_me: Sequence[int], start: int, length: int, units: int) -> bool:
    """True if a server counted in `totals_with_me` at `start` beats every other window.

    Then `best_start` (on the totals without it) returns `start`. A cheap sufficient
    test, a few C-level min() calls, for the common case in the rebalancing cascade
    where most servers already sit where they should; False means "compute it".
    With me in place, my window's minimum is the minimum of all totals. Any window left
    of mine leaves out my last block and all after it, so its minimum is at most theirs
    without me; any window right of mine, likewise for my first block and all before it.
    """
    t, end = totals_with_me, start + length
    value = min(t)
    if start > 0:  # some window lies left of mine
        left_cap = min(t[end - 1] - units, min(t[end:], default=t[end - 1]))
        if value <= left_cap:
            return False
    if end < len(t):  # some window lies right of mine
        right_cap = min(t[start] - units, min(t[:start], default=t[start]))
        if value <= right_cap:
            return False
    return True


def choose_blocks(
    servers: Iterable[ServerSpan],
    num_blocks: int,
    my_num_blocks: int,
    my_throughput: float,
    *,
    exclude: str | None = None,
) -> BlockRange:
    """The range of `my_num_blocks` blocks a joining server should serve.

    `servers` is the swarm as published; only JOINING and ONLINE servers count. Pass this
    server's own id as `exclude` so that a stale record of a previous run is ignored.
    """
    check_num_blocks(num_blocks)
    if not 1 <= my_num_blocks <= num_blocks:
        raise ValueError(f"cannot serve {my_num_blocks} blocks of a {num_blocks}-block model")
    totals = block_totals(placed_servers(servers, num_blocks, exclude), num_blocks)
    start = best_start(totals, my_num_blocks, to_units(my_throughput))
    return BlockRange(start, start + my_num_blocks)


def num_blocks_auto(
    memory_bytes_available: int,
    bytes_per_block: int,
    cache_bytes_reserved: int,
    num_blocks: int,
) -> int:
    """How many blocks fit in memory once the KV-cache budget is set aside.

    As many as fit, never more than the model has. Raises ValueError (with the figures)
    when not even one block fits: a server that serves nothing helps no one.
    """
    check_num_blocks(num_blocks)
    if bytes_per_block <= 0:
        raise ValueError(f"bytes_per_block must be positive, got {bytes_per_block}")
    if memory_bytes_available < 0 or cache_bytes_reserved < 0:
        raise ValueError("memory figures cannot be negative")
    fits = (memory_bytes_available - cache_bytes_reserved) // bytes_per_block
    if fits < 1:
        raise ValueError(
            f"not enough memory for one block: {memory_bytes_available} bytes available, "
            f"{cache_bytes_reserved} reserved for the KV cache, {bytes_per_block} per block; "
            "free memory, shrink the cache budget or pass --num-blocks explicitly"
        )
    return min(fits, num_blocks)
