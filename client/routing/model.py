"""The data that routing takes in and gives back: candidates, latencies, queries, routes.

Everything here is a frozen dataclass with no behaviour beyond validation, unit
conversion and formatting; the searches live in `client.routing.search` and
`client.routing.spread`. Conversions from published records (`BlockEntry`,
`ServerRecord`) are here so that the searches never see wire-level units (ms,
tokens per second).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from swarm.records import BlockEntry, BlockRange, ServerRecord


def _check_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class RouteCandidate:
    """One server as routing sees it: where it sits in the model and how fast it is."""

    server_id: str
    blocks: BlockRange
    """The contiguous blocks the server holds; a route may use any sub-range of them."""
    seconds_per_token_per_block: float
    """Inference-step compute time of one token through one block, load included."""
    free_cache_tokens: int = 0
    """Tokens of KV cache the server can still give a new session (per served block)."""
    forward_tokens_per_s: float = 0.0
    """Batch forward/backward throughput through one block (weights `spread_forward`)."""

    def __post_init__(self) -> None:
        if not self.server_id:
            raise ValueError("a route candidate needs a server id")
        _check_non_negative("seconds_per_token_per_block", self.seconds_per_token_per_block)
        _check_non_negative("forward_tokens_per_s", self.forward_tokens_per_s)

    @classmethod
    def from_entry(
        cls, entry: BlockEntry, *, load_factor: float = 1.0, unmeasured_s: float = 1.0
    ) -> RouteCandidate:
        """Builds a candidate from a server's published block entry.

        `load_factor` (>= 1) says how many times slower than its published, idle
        figure the server is now (e.g. 1 + its active sessions); the published
        throughput is measured on an idle server. A server that has not measured its
        throughput yet (0 tokens/s) costs `unmeasured_s` per token per block: slow
        enough to be picked last, finite so that it still fills gaps.
        """
        if not (math.isfinite(load_factor) and load_factor >= 1.0):
            raise ValueError(f"load_factor must be >= 1, got {load_factor!r}")
        tps = entry.inference_tokens_per_s
        spt = unmeasured_s if tps <= 0.0 else 1.0 / tps
        return cls(
            server_id=entry.server_id,
            blocks=entry.blocks,
            seconds_per_token_per_block=spt * load_factor,
            free_cache_tokens=entry.free_cache_tokens,
            forward_tokens_per_s=max(entry.forward_tokens_per_s, 0.0),
        )


@dataclass(frozen=True)
class LatencyView:
    """Round-trip times the client knows of, in seconds.

    Routing uses half a round trip as the one-way latency of a hop. Pairs missing from
    both maps cost `RoutingConfig.unknown_rtt_s`.
    """

    client_rtt_s: Mapping[str, float] = field(default_factory=dict)
    """Smoothed client <-> server round trips, by server id."""
    peer_rtt_s: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """peer_rtt_s[a][b]: server a's published round trip to server b."""

    def client_rtt(self, server_id: str, unknown_s: float) -> float:
        """Round trip between the client and `server_id`."""
        return self.client_rtt_s.get(server_id, unknown_s)

    def link_s(self, a: str, b: str, unknown_s: float) -> float:
        """One-way latency a -> b: half of what a (or else b) published about the pair.

        A server handing states to itself (a replacement route that starts on the
        server before the gap) costs nothing.
        """
        if a == b:
            return 0.0
        rtt = self.peer_rtt_s.get(a, {}).get(b)
        if rtt is None:
            # links are close to symmetric; b's measurement beats the default
            rtt = self.peer_rtt_s.get(b, {}).get(a, unknown_s)
        return rtt / 2.0

    @classmethod
    def from_records(
        cls, records: Iterable[ServerRecord], client_rtt_s: Mapping[str, float]
    ) -> LatencyView:
        """Collects the servers' published `next_hop_rtt_ms` (converted to seconds)."""
        peers = {
            r.server_id: {hop: ms / 1000.0 for hop, ms in r.next_hop_rtt_ms.items()}
            for r in records
        }
        return cls(client_rtt_s=dict(client_rtt_s), peer_rtt_s=peers)


@dataclass(frozen=True)
class RoutingConfig:
    """How routes are searched for and priced."""

    beam_width: int = 8
    """Partial chains kept per block boundary; >= number of servers makes it exact."""
    unknown_rtt_s: float = 0.1
    """Round trip assumed for a client-server or server-server pair never measured."""
    cache_penalty_s: float = 60.0
    """Added per segment whose server has less free cache than the session needs:
    large, so a server with room wins, finite, so a route exists when all are short."""
    chained: bool = True
    """True: servers pass hidden states to the next server (client -> s1 -> ... -> sN
    -> client, one-way hops). False: the client calls each server in turn (one client
    round trip per segment)."""

    def __post_init__(self) -> None:
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        _check_non_negative("unknown_rtt_s", self.unknown_rtt_s)
        _check_non_negative("cache_penalty_s", self.cache_penalty_s)


@dataclass(frozen=True)
class RouteQuery:
    """What to route: which blocks, for how large a session, avoiding whom.

    `after` / `before` are for replacing a failed server's blocks inside an existing
    chain: the server that will hand hidden states to the first new segment and the
    one that will receive them from the last. Left None, the client is that end.
    They only matter when routing is chained.
    """

    span: BlockRange
    """Blocks the route must cover: [0, num_blocks) for a whole model."""
    session_tokens: int = 0
    """KV-cache tokens the session needs (batch * max_length); 0: no cache (forward)."""
    tokens_per_step: int = 1
    """Tokens one inference step pushes through each block (batch * new tokens)."""
    banned: frozenset[str] = frozenset()
    """Server ids never to use (failed, draining, blacklisted)."""
    after: str | None = None
    before: str | None = None
    model: str = ""
    """Model name, only to name it in `NoRoute`."""

    def __post_init__(self) -> None:
        if self.session_tokens < 0 or self.tokens_per_step < 1:
            raise ValueError(
                f"need session_tokens >= 0 and tokens_per_step >= 1, got "
                f"{self.session_tokens} and {self.tokens_per_step}"
            )


@dataclass(frozen=True)
class Segment:
    """One server's part of a route: the blocks it computes."""

    server_id: str
    blocks: BlockRange

    def __str__(self) -> str:
        return f"{self.server_id}[{self.blocks}]"


@dataclass(frozen=True)
class Route:
    """Segments that cover the query's span contiguously, in order, with their price."""

    segments: tuple[Segment, ...]
    expected_step_s: float
    """Expected seconds per inference step (hops + compute + cache penalties); for a
    forward route from `spread`, compute only."""

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a route needs at least one segment")
        for prev, nxt in zip(self.segments, self.segments[1:]):
            if prev.blocks.end != nxt.blocks.start:
                raise ValueError(f"segments {prev} and {nxt} are not contiguous")

    @property
    def span(self) -> BlockRange:
        return BlockRange(self.segments[0].blocks.start, self.segments[-1].blocks.end)

    @property
    def server_ids(self) -> tuple[str, ...]:
        return tuple(s.server_id for s in self.segments)

    def describe(self) -> str:
        """One log-line summary: 's1[0:10] -> s2[10:20] (expected 12.3 ms/step)'."""
        chain = " -> ".join(str(s) for s in self.segments)
        return f"{chain} (expected {self.expected_step_s * 1000.0:.1f} ms/step)"
