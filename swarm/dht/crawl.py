"""Iterative Kademlia lookup with the network call passed in.

`crawl` finds the `ksize` nodes nearest to a target id that answer, and collects every
value they return. Unlike `kademlia`'s `ValueSpiderCrawl` it does not stop at the first
round that finds a value nor pick the most common value: the DHT keeps per-server
entries on each node, so the caller merges the values of all of the nearest nodes.

Algorithm: keep candidates ordered by XOR distance to the target. While some of the
`ksize` nearest candidates not known to have failed have not been asked, keep up to
`alpha` queries in flight (a new one starts as soon as one finishes, not in lock-step
rounds, so one dead node delays nothing but its own slot). Each answer adds the peers
it names. Stop when the `ksize` nearest live candidates have all answered or failed, or
at the deadline (then in-flight queries are cancelled and the partial result returned).

No sockets and no clock besides the event loop's: `ask` does the network call and
returns None when the peer does not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Peer:
    """A DHT node: its 20-byte id and UDP address (an IP literal)."""

    node_id: bytes
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Reply:
    """A peer's answer: the peers it knows near the target and, maybe, a value."""

    peers: tuple[Peer, ...] = ()
    value: bytes | None = None


Ask = Callable[[Peer], Awaitable[Reply | None]]
"""Queries one peer; returns None when it does not answer."""


@dataclass
class CrawlResult:
    """What a crawl found."""

    nearest: list[Peer] = field(default_factory=list)
    """The nearest peers that answered, nearest first, at most ksize."""
    values: list[tuple[Peer, bytes]] = field(default_factory=list)
    """Every value returned, with who returned it."""
    failed: list[Peer] = field(default_factory=list)
    """Peers that did not answer."""


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


class _State:
    def __init__(self, target: bytes, exclude: bytes | None, ksize: int) -> None:
        self.target = target
        self.exclude = exclude
        self.ksize = ksize
        self.candidates: dict[bytes, Peer] = {}
        self.asked: set[bytes] = set()
        self.answered: dict[bytes, Peer] = {}
        self.failed: dict[bytes, Peer] = {}

    def add(self, peers: Iterable[Peer]) -> None:
        for peer in peers:
            if peer.node_id != self.exclude and peer.node_id not in self.candidates:
                self.candidates[peer.node_id] = peer

    def _live_nearest(self) -> list[Peer]:
        live = [p for p in self.candidates.values() if p.node_id not in self.failed]
        live.sort(key=lambda p: distance(p.node_id, self.target))
        return live[: self.ksize]

    def next_to_ask(self) -> Peer | None:
        for peer in self._live_nearest():
            if peer.node_id not in self.asked:
                return peer
        return None

    def result(self, values: list[tuple[Peer, bytes]]) -> CrawlResult:
        nearest = sorted(self.answered.values(), key=lambda p: distance(p.node_id, self.target))
        return CrawlResult(nearest[: self.ksize], values, list(self.failed.values()))


async def crawl(
    target: bytes,
    seeds: Iterable[Peer],
    ask: Ask,
    *,
    ksize: int,
    alpha: int,
    timeout: float,
    exclude: bytes | None = None,
) -> CrawlResult:
    """Looks up `target` starting from `seeds` (see the module docstring).

    `exclude` is our own id (never asked). Returns after at most `timeout` seconds.
    """
    state = _State(target, exclude, ksize)
    state.add(seeds)
    values: list[tuple[Peer, bytes]] = []
    in_flight: dict[asyncio.Task[Reply | None], Peer] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            while len(in_flight) < alpha and (peer := state.next_to_ask()) is not None:
                state.asked.add(peer.node_id)
                in_flight[asyncio.ensure_future(ask(peer))] = peer
            remaining = deadline - loop.time()
            if not in_flight or remaining <= 0:
                break
            done, _ = await asyncio.wait(in_flight, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                peer = in_flight.pop(task)
                reply = task.result()
                if reply is None:
                    state.failed[peer.node_id] = peer
                    continue
                state.answered[peer.node_id] = peer
                state.add(reply.peers)
                if reply.value is not None:
                    values.append((peer, reply.value))
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    return state.result(values)
