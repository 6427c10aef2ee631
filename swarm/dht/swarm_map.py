"""The swarm seen from the DHT: which servers cover which blocks of a model.

Pure: built from the entries a lookup returned, no network, no clock. A server's newest
entry (highest issued_at over all block keys) is its truth: a server that moved keeps
stale entries under its old blocks until they expire, and those are ignored. A block is
*covered* when at least one ONLINE server holds it; JOINING, DRAINING and OFFLINE
servers are listed but do not count.

`SwarmMap.to_json_dict()` returns the shape documented in docs/status-json.md:

    {"model": str, "num_blocks": int, "hidden_size": int, "complete": bool,
     "uncovered_blocks": [int],
     "totals": {"servers": int, "online": int, "joining": int, "draining": int,
                "offline": int, "covered_blocks": int,
                "min_online_servers_per_block": int,
                "min_block_inference_tokens_per_s": float},
     "servers": [{"server_id": str, "short_id": str, "address": str,
                  "state": "joining" | "online" | "draining" | "offline",
                  "blocks": [start, end], "inference_tokens_per_s": float,
                  "forward_tokens_per_s": float, "free_cache_tokens": int}],
     "blocks": [{"block": int, "online": int, "servers": [server_id, ...]}]}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarm.records import BlockEntry, BlockRange, ModelEntry, ServerState

SHORT_ID_CHARS = 8
"""Characters of a server id shown to people."""


@dataclass(frozen=True)
class AnnouncedModel:
    """A model's shape as its servers state it, and how many state it."""

    model: str
    num_blocks: int
    hidden_size: int
    num_servers: int


def announced_model_of(model: str, entries: Iterable[ModelEntry]) -> AnnouncedModel | None:
    """The shape most servers of `model` agree on (ties: the most recently stated).

    A single server stating a wrong shape cannot change what the majority says.
    """
    votes: Counter[tuple[int, int]] = Counter()
    newest: dict[tuple[int, int], float] = {}
    for entry in entries:
        if entry.model != model:
            continue
        shape = (entry.num_blocks, entry.hidden_size)
        votes[shape] += 1
        newest[shape] = max(newest.get(shape, entry.issued_at), entry.issued_at)
    if not votes:
        return None
    shape = max(votes, key=lambda s: (votes[s], newest[s]))
    return AnnouncedModel(model, shape[0], shape[1], sum(votes.values()))


@dataclass(frozen=True)
class ServerView:
    """One server as the swarm map shows it (from its newest block entry)."""

    server_id: str
    address: str
    state: ServerState
    blocks: BlockRange
    inference_tokens_per_s: float
    forward_tokens_per_s: float
    free_cache_tokens: int

    @property
    def short_id(self) -> str:
        return self.server_id[:SHORT_ID_CHARS]

    @property
    def live(self) -> bool:
        return self.state is ServerState.ONLINE

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "short_id": self.short_id,
            "address": self.address,
            "state": self.state.name.lower(),
            "blocks": [self.blocks.start, self.blocks.end],
            "inference_tokens_per_s": self.inference_tokens_per_s,
            "forward_tokens_per_s": self.forward_tokens_per_s,
            "free_cache_tokens": self.free_cache_tokens,
        }


@dataclass(frozen=True)
class BlockCoverage:
    """The servers holding one block: ONLINE first, then by inference speed."""

    block: int
    servers: tuple[ServerView, ...]

    @property
    def online(self) -> tuple[ServerView, ...]:
        return tuple(s for s in self.servers if s.live)

    @property
    def covered(self) -> bool:
        return bool(self.online)


@dataclass(frozen=True)
class SwarmTotals:
    """Counts over a whole swarm map."""

    servers: int
    by_state: Mapping[ServerState, int]
    covered_blocks: int
    min_online_servers_per_block: int
    min_block_inference_tokens_per_s: float
    """Min over blocks of the summed speed of their ONLINE servers: an upper bound on
    the swarm's single-stream inference speed per block."""


@dataclass(frozen=True)
class SwarmMap:
    """Per block of one model, the servers covering it (see the module docstring)."""

    model: str
    num_blocks: int
    """0 when the model is not known on the swarm."""
    hidden_size: int
    servers: tuple[ServerView, ...]
    blocks: tuple[BlockCoverage, ...]

    @property
    def uncovered_blocks(self) -> tuple[int, ...]:
        return tuple(b.block for b in self.blocks if not b.covered)

    @property
    def complete(self) -> bool:
        """True if every block has an ONLINE server."""
        return self.num_blocks > 0 and not self.uncovered_blocks

    def totals(self) -> SwarmTotals:
        states = Counter(s.state for s in self.servers)
        online_counts = [len(b.online) for b in self.blocks]
        speeds = [sum((s.inference_tokens_per_s for s in b.online), 0.0) for b in self.blocks]
        return SwarmTotals(
            servers=len(self.servers),
            by_state={state: states.get(state, 0) for state in ServerState},
            covered_blocks=sum(1 for n in online_counts if n),
            min_online_servers_per_block=min(online_counts, default=0),
            min_block_inference_tokens_per_s=min(speeds, default=0.0),
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The documented JSON shape (module docstring, docs/status-json.md)."""
        totals = self.totals()
        counts: dict[str, Any] = {"servers": totals.servers}
        counts.update({state.name.lower(): n for state, n in totals.by_state.items()})
        counts["covered_blocks"] = totals.covered_blocks
        counts["min_online_servers_per_block"] = totals.min_online_servers_per_block
        counts["min_block_inference_tokens_per_s"] = totals.min_block_inference_tokens_per_s
        return {
            "model": self.model,
            "num_blocks": self.num_blocks,
            "hidden_size": self.hidden_size,
            "complete": self.complete,
            "uncovered_blocks": list(self.uncovered_blocks),
            "totals": counts,
            "servers": [s.to_json_dict() for s in self.servers],
            "blocks": [
                {"block": b.block, "online": len(b.online), "servers": [s.server_id for s in b.servers]}
                for b in self.blocks
            ],
        }


def _view(entry: BlockEntry) -> ServerView:
    return ServerView(
        server_id=entry.server_id,
        address=entry.address,
        state=entry.state,
        blocks=entry.blocks,
        inference_tokens_per_s=entry.inference_tokens_per_s,
        forward_tokens_per_s=entry.forward_tokens_per_s,
        free_cache_tokens=entry.free_cache_tokens,
    )


def build_swarm_map(
    model: str,
    num_blocks: int,
    hidden_size: int,
    entries_by_block: Mapping[int, Sequence[BlockEntry]],
) -> SwarmMap:
    """The swarm map of `model` from the block entries found under each block key."""
    newest: dict[str, BlockEntry] = {}
    for entries in entries_by_block.values():
        for entry in entries:
            current = newest.get(entry.server_id)
            if current is None or entry.issued_at > current.issued_at:
                newest[entry.server_id] = entry
    views = sorted(
        (_view(e) for e in newest.values()), key=lambda v: (v.blocks.start, v.blocks.end, v.server_id)
    )
    coverage = []
    for block in range(num_blocks):
        holders = [v for v in views if block in v.blocks]
        holders.sort(key=lambda v: (not v.live, -v.inference_tokens_per_s, v.server_id))
        coverage.append(BlockCoverage(block, tuple(holders)))
    return SwarmMap(model, num_blocks, hidden_size, tuple(views), tuple(coverage))
