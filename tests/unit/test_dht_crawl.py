"""The iterative lookup on a simulated network (the network call is a function)."""

from __future__ import annotations

import asyncio
import random

from swarm.dht.crawl import Peer, Reply, crawl, distance

K = 8


def _network(size: int, seed: int) -> tuple[list[Peer], dict[bytes, list[Peer]]]:
    """Peers that each know their K nearest and a few random others (like k-buckets)."""
    rng = random.Random(seed)
    peers = [Peer(rng.randbytes(20), "127.0.0.1", 1000 + i) for i in range(size)]
    tables = {}
    for p in peers:
        near = sorted(peers, key=lambda q: distance(q.node_id, p.node_id))[1 : K + 1]
        tables[p.node_id] = near + rng.sample(peers, 6)
    return peers, tables


def _asker(tables: dict[bytes, list[Peer]], target: bytes, dead: set[bytes], values: dict[bytes, bytes], log: list[Peer]):  # type: ignore[no-untyped-def]
    async def ask(peer: Peer) -> Reply | None:
        log.append(peer)
        await asyncio.sleep(0)
        if peer.node_id in dead:
            await asyncio.sleep(0.05)
            return None
        near = sorted(tables[peer.node_id], key=lambda q: distance(q.node_id, target))[:K]
        return Reply(tuple(near), values.get(peer.node_id))

    return ask


async def test_finds_the_true_k_nearest_from_a_far_seed() -> None:
    peers, tables = _network(300, seed=1)
    target = random.Random(2).randbytes(20)
    log: list[Peer] = []
    result = await crawl(target, peers[:1], _asker(tables, target, set(), {}, log), ksize=K, alpha=3, timeout=5)
    truth = sorted(peers, key=lambda p: distance(p.node_id, target))[:K]
    assert result.nearest == truth
    assert len(log) < 100  # a lookup, not a flood
    assert len({p.node_id for p in log}) == len(log)  # nobody asked twice


async def test_collects_values_of_all_nearest_and_skips_dead_peers() -> None:
    peers, tables = _network(200, seed=3)
    target = random.Random(4).randbytes(20)
    ranked = sorted(peers, key=lambda p: distance(p.node_id, target))
    dead = {p.node_id for p in ranked[:3]}
    values = {p.node_id: bytes([i]) for i, p in enumerate(ranked[3:6])}
    result = await crawl(target, peers[:2], _asker(tables, target, dead, values, []), ksize=K, alpha=3, timeout=5)
    assert result.nearest == ranked[3 : 3 + K]
    assert sorted(v for _, v in result.values) == [b"\0", b"\1", b"\2"]
    assert {p.node_id for p in result.failed} == dead


async def test_deadline_returns_partial_result() -> None:
    peers, tables = _network(50, seed=5)
    target = peers[0].node_id

    async def slow(peer: Peer) -> Reply | None:
        await asyncio.sleep(10)
        return Reply()

    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await crawl(target, peers[1:5], slow, ksize=K, alpha=3, timeout=0.1)
    assert loop.time() - start < 1.0
    assert result.nearest == [] and result.values == []


async def test_excludes_ourselves() -> None:
    peers, tables = _network(30, seed=6)
    me = peers[0]
    log: list[Peer] = []
    await crawl(me.node_id, peers[:5], _asker(tables, me.node_id, set(), {}, log), ksize=K, alpha=2, timeout=5, exclude=me.node_id)
    assert me not in log
