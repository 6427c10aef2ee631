"""The swarm as placement sees it: which server serves which blocks, and how fast.

A `ServerSpan` is the plain data a placement decision needs about one server: its id,
its contiguous `BlockRange`, its throughput (tokens/s through one block) and its state.
Only JOINING and ONLINE servers carry load; DRAINING and OFFLINE ones add nothing.

Throughput per block is the sum of the throughputs of the serving servers that cover it;
the swarm's throughput is the minimum over all blocks (a request must pass every block).

Inside the placement modules throughputs are whole numbers of `UNITS_PER_TOKEN_S`
(milli-tokens/s). Integer sums are exact and do not depend on the order of addition, so
"remove a server, re-add it" returns exactly the state before, and the same records
always give the same decision; with floats, a stray 1e-13 makes a server move back and
forth between two equally good ranges.

Not here: choosing a range (`node.placement.choose`), deciding to move
(`node.placement.rebalance`), bounds on the best placement (`node.placement.bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from swarm.records import BlockEntry, BlockRange, ServerRecord, ServerState, Throughput

UNITS_PER_TOKEN_S = 1000
"""Integer throughput units per token/s (1 unit = 0.001 tokens/s)."""

SERVING_STATES = frozenset({ServerState.JOINING, ServerState.ONLINE})
"""States whose servers count towards the swarm's throughput."""


@dataclass(frozen=True)
class ServerSpan:
    """One server's place in the swarm, as placement decisions see it."""

    server_id: str
    blocks: BlockRange
    throughput: float
    """Tokens/s through one block (see `placement_throughput`)."""
    state: ServerState = ServerState.ONLINE

    @property
    def serving(self) -> bool:
        """True if this server's throughput counts towards its blocks."""
        return self.state in SERVING_STATES


def placement_throughput(throughput: Throughput) -> float:
    """The speed placement credits a server with: the slower of compute and network.

    A server is as fast as its bottleneck. Zero means "not measured" and is ignored; with
    neither figure measured, the inference speed stands in.
    """
    measured = [
        v for v in (throughput.forward_tokens_per_s, throughput.network_tokens_per_s) if v > 0
    ]
    return min(measured) if measured else max(throughput.inference_tokens_per_s, 0.0)


UNMEASURED_TOKENS_S = 1.0
"""What placement credits a server that states no speed at all (so it still counts)."""


def credited_throughput(throughput: Throughput) -> float:
    """THE speed placement credits a server with, itself or a peer: `placement_throughput`,
    at least `UNMEASURED_TOKENS_S`. Every span placement weighs is made with this."""
    return max(placement_throughput(throughput), UNMEASURED_TOKENS_S)


def span_from_entry(entry: BlockEntry) -> ServerSpan:
    """The placement view of a server's compact per-block entry (peers read from the DHT,
    and a server's own entry, so it weighs itself exactly as its peers weigh it)."""
    return ServerSpan(entry.server_id, entry.blocks, credited_throughput(entry.throughput), entry.state)


def span_from_record(record: ServerRecord) -> ServerSpan:
    """The placement view of a published server record (the same as of its entries)."""
    return span_from_entry(BlockEntry.from_record(record))


def to_units(tokens_per_s: float) -> int:
    """Tokens/s as integer units; negative, NaN and infinite speeds count as 0.

    Records come from peers: a forged "infinite" speed must not swallow the swarm.
    """
    if not math.isfinite(tokens_per_s) or tokens_per_s <= 0:
        return 0
    return round(tokens_per_s * UNITS_PER_TOKEN_S)


def to_tokens_per_s(units: int) -> float:
    """Integer units back to tokens/s."""
    return units / UNITS_PER_TOKEN_S


class Placed(NamedTuple):
    """A serving server reduced to integers, clipped to the model's blocks.

    A NamedTuple, not a dataclass: decisions build one per server per call, and tuples
    are several times cheaper to make.
    """

    server_id: str
    start: int
    length: int
    units: int


def placed_servers(
    servers: Iterable[ServerSpan],
    num_blocks: int,
    exclude: str | None = None,
    states: frozenset[ServerState] = SERVING_STATES,
) -> list[Placed]:
    """Servers in `states` (all but `exclude`), sorted by id, ranges clipped to the model.

    Blocks past `num_blocks` do not exist, so a range reaching past them contributes
    only the part that does; a range wholly past the end contributes nothing.
    """
    out = []
    for s in servers:
        b = s.blocks
        if s.state not in states or b.start >= num_blocks or s.server_id == exclude:
            continue
        end = b.end if b.end < num_blocks else num_blocks
        out.append(Placed(s.server_id, b.start, end - b.start, to_units(s.throughput)))
    # Sorted (tuple order: id first), every later step, such as the rebalancing cascade's
    # order, is free of the input's order.
    out.sort()
    return out


def block_totals(placed: Iterable[Placed], num_blocks: int) -> list[int]:
    """Units per block: a difference array, O(servers + blocks)."""
    diff = [0] * (num_blocks + 1)
    for p in placed:
        diff[p.start] += p.units
        diff[p.start + p.length] -= p.units
    totals, running = [], 0
    for d in diff[:num_blocks]:
        running += d
        totals.append(running)
    return totals


def add_span(totals: list[int], start: int, length: int, units: int) -> None:
    """Adds `units` to blocks [start, start + length) in place (negative removes)."""
    for b in range(start, start + length):
        totals[b] += units


def block_throughputs(servers: Iterable[ServerSpan], num_blocks: int) -> list[float]:
    """Tokens/s per block of the serving servers."""
    check_num_blocks(num_blocks)
    totals = block_totals(placed_servers(servers, num_blocks), num_blocks)
    return [to_tokens_per_s(t) for t in totals]


def swarm_throughput(servers: Iterable[ServerSpan], num_blocks: int) -> float:
    """Tokens/s of the swarm: the throughput of its slowest block (0 if any is uncovered)."""
    return min(block_throughputs(servers, num_blocks))


def uncovered(totals: Sequence[int]) -> int:
    """How many blocks have no serving throughput (no server, or only 0-speed ones)."""
    return sum(1 for t in totals if t <= 0)


def check_num_blocks(num_blocks: int) -> None:
    """Raises ValueError unless `num_blocks` is a possible model size."""
    if num_blocks < 1:
        raise ValueError(f"a model has at least one block, got num_blocks={num_blocks}")
