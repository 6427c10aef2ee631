"""In-process swarms of real UDP DHT nodes on 127.0.0.1: announce, look up, expire, resist."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import umsgpack

from swarm.codec.entries import entry_from_message, entry_to_message, sign_entry
from swarm.addresses import PeerAddress
from swarm.dht import DhtConfig, SwarmDHT, keys
from swarm.identity import Identity
from swarm.records import ServerRecord
from tests.dht_factories import MODEL, block_entry, make_record
from tests.wait import async_wait_until

CONFIG = DhtConfig(ksize=8, rpc_timeout=1.0, lookup_timeout=5.0, bootstrap_timeout=5.0)
RANGES = [(0, 4), (2, 8), (6, 12), (0, 12), (4, 6)]


@contextlib.asynccontextmanager
async def swarm(size: int, config: DhtConfig = CONFIG) -> AsyncIterator[list[SwarmDHT]]:
    """`size` nodes, each joining through a random earlier one; fails on any loop error."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    rng = random.Random(size)
    nodes = [await SwarmDHT.start("127.0.0.1", 0, config=config)]
    try:
        for _ in range(size - 1):
            via = rng.choice(nodes)
            nodes.append(await SwarmDHT.start("127.0.0.1", 0, [PeerAddress("127.0.0.1", via.port)], config=config))
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))
        loop.set_exception_handler(None)
    assert errors == []


async def announce_servers(nodes: list[SwarmDHT], ttl: float = 60.0) -> dict[str, ServerRecord]:
    """Servers with overlapping ranges announced from the first nodes; returns their records."""
    records = {}
    for node, blocks in zip(nodes, RANGES, strict=False):
        identity = Identity.generate()
        record = make_record(identity, blocks, port=node.port)
        assert await node.announce(identity, record, ttl) == 2 + blocks[1] - blocks[0] + 1
        records[identity.server_id] = record
    return records


def expected_holders(records: dict[str, ServerRecord], block: int) -> set[str]:
    return {sid for sid, r in records.items() if block in r.blocks}


async def test_announced_records_are_visible_from_every_node() -> None:
    async with swarm(24) as nodes:
        records = await announce_servers(nodes)

        async def check(node: SwarmDHT) -> None:
            swarm_map = await node.get_swarm_map(MODEL)
            assert swarm_map.num_blocks == 12 and swarm_map.hidden_size == 64 and swarm_map.complete
            assert {s.server_id for s in swarm_map.servers} == set(records)
            for coverage in swarm_map.blocks:
                assert {s.server_id for s in coverage.servers} == expected_holders(records, coverage.block)
            for server_id, record in records.items():
                found = await node.get_record(server_id)
                assert found is not None
                assert dataclasses.replace(found, issued_at=0.0, expiration=0.0) == dataclasses.replace(
                    record, issued_at=0.0, expiration=0.0
                )
            assert [m.model for m in await node.list_models()] == [MODEL]

        for node in nodes:  # one after the other: 24 nodes share one event loop and 2 cores
            await check(node)


async def test_records_expire_after_their_ttl_and_reannouncing_refreshes() -> None:
    async with swarm(20) as nodes:
        gone, kept = Identity.generate(), Identity.generate()
        await nodes[0].announce(gone, make_record(gone, (0, 2)), ttl=1.5)
        await nodes[1].announce(kept, make_record(kept, (0, 2)), ttl=1.5)
        first = await nodes[5].get_record(gone.server_id)
        assert first is not None and await nodes[6].get_record(kept.server_id) is not None
        # refreshed for long: the checks below may take a while on a loaded machine
        await nodes[1].announce(kept, make_record(kept, (0, 2)), ttl=60)
        await async_wait_until(lambda: time.time() > first.expiration, 5, "the first records' expiry time")

        async def check(node: SwarmDHT) -> None:
            assert await node.get_record(gone.server_id) is None
            assert await node.get_record(kept.server_id) is not None
            assert [e.server_id for e in await node.get_block_entries(MODEL, 1)] == [kept.server_id]

        for node in nodes:
            await check(node)


def _with_unknown_field(raw: bytes, size: int) -> bytes:
    # field 15, length-delimited: a SignedEntry padded past the size limit, still validly signed
    return raw + b"\x7a" + bytes([0x80 | (size & 0x7F), size >> 7]) + b"x" * size


async def test_forged_tampered_replayed_expired_and_oversized_entries_are_rejected() -> None:
    async with swarm(16) as nodes:
        victim, mallory = Identity.generate(), Identity.generate()
        genuine = make_record(victim, (0, 4), issued_at=time.time())
        await nodes[0].announce(victim, genuine, ttl=60)
        record_key = keys.server_key(victim.server_id)
        attacker = nodes[9].node

        forged = sign_entry(mallory, make_record(mallory, (0, 4), port=6666), record_key)
        swapped = entry_to_message(forged)
        swapped.public_key = victim.public_key
        tampered = entry_to_message(sign_entry(victim, make_record(victim, (0, 4)), record_key))
        tampered.payload = tampered.payload.replace(b"127.0.0.1:5000", b"127.0.0.1:6666")
        expired = sign_entry(victim, make_record(victim, (0, 4), issued_at=time.time() - 30, ttl=10), record_key)
        oversized = _with_unknown_field(sign_entry(victim, make_record(victim, (0, 4), port=6666), record_key), 5000)
        for raw in (forged, entry_from_message(swapped), entry_from_message(tampered), expired, oversized):
            assert await attacker.store(record_key, [raw]) == 0

        # a replay is refused where the newer entry is stored, and loses every lookup merge
        dkey = keys.key_digest(record_key)
        holders = [n for n in nodes if n.node.storage.get(dkey, time.time())]
        assert len(holders) >= CONFIG.ksize // 2
        replayed = sign_entry(victim, make_record(victim, (0, 4), issued_at=time.time() - 30, port=6666), record_key)
        await attacker.store(record_key, [replayed])
        for holder in holders:
            assert holder.node.storage.get(dkey, time.time()) != [replayed]

        stray = sign_entry(mallory, block_entry(mallory, (0, 2), port=6666), keys.block_key(MODEL, 3))
        assert await attacker.store(keys.block_key(MODEL, 3), [stray]) == 0

        async def check(node: SwarmDHT) -> None:
            record = await node.get_record(victim.server_id)
            assert record is not None and record.address == genuine.address
            assert [e.server_id for e in await node.get_block_entries(MODEL, 3)] == [victim.server_id]

        for node in nodes:
            await check(node)


def _junk(node_id: bytes) -> list[bytes]:
    msg = os.urandom(20)
    req, resp = b"\x00" + msg, b"\x01" + msg
    pack = umsgpack.packb
    return [
        b"", b"\x00", os.urandom(10), os.urandom(200), req + os.urandom(500), os.urandom(60_000),
        req + b"\x91" * 20_000,  # nested arrays: recursion
        req + b"\xdd\xff\xff\xff\xff", req + b"\xc6\xff\xff\xff\xff", req + b"\xd4\x01\x01",
        req + b"\xd6\xff" + b"\xff" * 4, req + b"\x81\x91\x01\x01", req + b"\x82\x01\x01\x01\x02",
        req + pack("string"), req + pack(["ping"]), req + pack(["nope", []]), req + pack([1, [2]]),
        req + pack(["ping", [b"short"]]), req + pack(["ping", [{"a": 1}]]),
        req + pack(["find_node", [None, b"\0" * 32]]), req + pack(["find_value", [node_id, [1, 2]]]),
        req + pack(["store", [b"x", b"y", b"z"]]), req + pack(["store", [None, node_id, "text"]]),
        req + pack(["store", [None, node_id, os.urandom(7000)]]), req + pack(["store", [None, node_id, b"\x0a\x05ab"]]),
        req + pack(["find_value", [None, node_id, 3]]), req + b"\x00" * 9000,
        resp + pack([1, 2]), resp + pack({"value": 1}), resp + os.urandom(100),
    ]


async def _read_through(sock: socket.socket, port: int, timeout: float = 10.0) -> None:
    """Returns once the node at `port` has read every datagram `sock` sent it so far.

    A node handles one socket's datagrams in arrival order (loopback keeps the order), so
    its answer to a request sent after them proves it read them all.
    """
    msg_id = os.urandom(20)
    sock.setblocking(False)
    sock.sendto(b"\x00" + msg_id + umsgpack.packb(["stun", []]), ("127.0.0.1", port))

    def answered() -> bool:
        # polled, not awaited on the loop: uvloop has no sock_recvfrom
        with contextlib.suppress(BlockingIOError):
            while True:
                if sock.recvfrom(65536)[0][:21] == b"\x01" + msg_id:
                    return True
        return False

    await async_wait_until(answered, timeout, f"the node at port {port} answers after the junk")


async def test_junk_datagrams_do_not_crash_nodes(caplog: pytest.LogCaptureFixture) -> None:
    async with swarm(12) as nodes:
        records = await announce_servers(nodes[:2])
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        try:
            for node in nodes:
                for datagram in _junk(node.node.node_id):
                    sock.sendto(datagram, ("127.0.0.1", node.port))
                await _read_through(sock, node.port)
        finally:
            sock.close()
        for node in nodes:
            for server_id in records:
                assert await node.get_record(server_id) is not None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_lookups_survive_losing_30_percent_of_nodes() -> None:
    async with swarm(24) as nodes:
        records = await announce_servers(nodes)
        dead_server = list(records)[4]
        victims = [nodes[4], *random.Random(7).sample(nodes[5:], 6)]  # 7 of 24, one a server's
        for node in victims:
            await node.stop()
        alive = [node for node in nodes if node not in victims]
        live_servers = [sid for sid in records if sid != dead_server]

        async def check(node: SwarmDHT) -> None:
            for server_id in live_servers:
                assert await node.get_record(server_id) is not None
            found = {e.server_id for e in await node.get_block_entries(MODEL, 3)}
            assert expected_holders({s: records[s] for s in live_servers}, 3) <= found

        await asyncio.gather(*(check(node) for node in alive))  # timeouts on the dead overlap


async def test_a_hundred_servers_on_one_block_are_readable() -> None:
    async with swarm(16) as nodes:
        identities = [Identity.generate() for _ in range(100)]
        for first in range(0, 100, 10):  # ten servers at a time: one event loop plays them all
            stored = await asyncio.gather(*(
                nodes[i % len(nodes)].announce(
                    identity, make_record(identity, (0, 1), model="org/popular", num_blocks=1, port=7000 + i), 60
                )
                for i, identity in enumerate(identities[first : first + 10], start=first)
            ))
            assert stored == [4] * 10
        for node in nodes[::5]:
            entries = await node.get_block_entries("org/popular", 0)
            assert {e.server_id for e in entries} == {i.server_id for i in identities}
        swarm_map = await nodes[-1].get_swarm_map("org/popular")
        assert len(swarm_map.blocks[0].servers) == 100


async def test_a_joining_node_receives_the_keys_it_is_near_to() -> None:
    async with swarm(1) as nodes:
        server = Identity.generate()
        await nodes[0].announce(server, make_record(server, (0, 2)), 60)
        newcomer = await SwarmDHT.start("127.0.0.1", 0, [PeerAddress("127.0.0.1", nodes[0].port)], config=CONFIG)
        try:
            dkey = keys.key_digest(keys.server_key(server.server_id))
            await async_wait_until(lambda: newcomer.node.storage.get(dkey, time.time()), 2,
                                   "the key is handed to the newcomer")
            await nodes[0].stop()
            assert await newcomer.get_record(server.server_id) is not None  # from its own storage
        finally:
            await newcomer.stop()


async def test_client_mode_looks_up_without_joining_tables() -> None:
    async with swarm(8) as nodes:
        records = await announce_servers(nodes[:3])
        client_config = dataclasses.replace(CONFIG, client_mode=True)
        async with await SwarmDHT.start("127.0.0.1", 0, [PeerAddress("127.0.0.1", nodes[2].port)], config=client_config) as client:
            assert client.num_peers > 0
            for server_id in records:
                assert await client.get_record(server_id) is not None
            client_id = client.node.node_id
            for node in nodes:
                assert all(client_id not in bucket.nodes for bucket in node.node.protocol.router.buckets)


def test_works_under_uvloop() -> None:
    import uvloop

    async def scenario() -> None:
        async with swarm(6) as nodes:
            records = await announce_servers(nodes[:2])
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for datagram in _junk(nodes[0].node.node_id):
                sock.sendto(datagram, ("127.0.0.1", nodes[0].port))
            await _read_through(sock, nodes[0].port)
            sock.close()
            swarm_map = await nodes[-1].get_swarm_map(MODEL)
            assert {s.server_id for s in swarm_map.servers} == set(records)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_a_node_without_the_swarm_token_can_neither_join_nor_read() -> None:
    private = dataclasses.replace(CONFIG, swarm_token="s3cret-token")
    async with swarm(6, private) as nodes:
        records = await announce_servers(nodes[:2])
        entry = nodes[3]
        outsiders = [
            await SwarmDHT.start("127.0.0.1", 0, [PeerAddress("127.0.0.1", entry.port)], config=config)
            for config in (CONFIG, dataclasses.replace(CONFIG, swarm_token="another-token"))
        ]
        insider = await SwarmDHT.start("127.0.0.1", 0, [PeerAddress("127.0.0.1", entry.port)], config=private)
        try:
            for outsider in outsiders:
                assert outsider.num_peers == 0
                for server_id in records:
                    assert await outsider.get_record(server_id) is None
                assert (await outsider.get_swarm_map(MODEL)).num_blocks == 0
            assert insider.num_peers > 0
            for server_id in records:
                assert await insider.get_record(server_id) is not None
            for outsider in outsiders:
                outsider_id = outsider.node.node_id
                for node in nodes:
                    assert all(outsider_id not in bucket.nodes for bucket in node.node.protocol.router.buckets)
            insider_id = insider.node.node_id
            await async_wait_until(lambda: any(insider_id in b.nodes for b in entry.node.protocol.router.buckets),
                                   5, "the node with the token enters the table of the node it joined through")
        finally:
            await asyncio.gather(*(dht.stop() for dht in (*outsiders, insider)))
