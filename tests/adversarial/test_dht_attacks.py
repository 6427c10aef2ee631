"""DHT attacks against a real swarm (`swarm-node dht` + two `swarm-node start` servers).

The attacker lives in the test process and speaks the DHT wire format over one UDP
socket: rpcudp framing (0x00 request, 20-byte message id, msgpack [name, args]).

- Flood: 300 fresh identities sign max-lifetime entries pointing at a dead port under
  every block key and the model keys. The genuine servers, proven by re-announcing,
  stay listed (the key's room goes to fakes only where fakes were), and a generation
  through the swarm still equals the local reference.
- Ping flood: 5000 pings with random node ids from one socket. Servers keep announcing,
  a fresh client's start + lookup stays within ~1 s of the time measured before the
  attack, and the attacker's socket gets at most a couple of pings back per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import torch
import umsgpack
from transformers import AutoModelForCausalLM

from swarm.addresses import PeerAddress
from swarm.codec.entries import encode_value, sign_entry
from swarm.dht import DhtConfig, SwarmDHT, keys
from swarm.dht.node import batches
from swarm.identity import Identity
from swarm.records import BlockEntry, ModelEntry
from tests.dht_factories import make_record
from tests.integration.conftest import RunningSwarm, start_swarm
from tests.integration.slicing_models import VOCAB
from tests.wait import async_wait_until

CLIENT = DhtConfig(client_mode=True, rpc_timeout=1.0, lookup_timeout=5.0, bootstrap_timeout=5.0)
UPDATE_PERIOD = 2.0
DEAD_PORT = 9  # discard: nothing listens there


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    swarm = start_swarm(tmp_path_factory.mktemp("dht-attacks"), "llama", ["0:3", "3:6"],
                        "--cache-tokens", "4096", "--update-period", str(UPDATE_PERIOD))
    yield swarm
    swarm.swarm.stop_all()


@contextlib.asynccontextmanager
async def client_dht(running: RunningSwarm) -> AsyncIterator[SwarmDHT]:
    dht = await SwarmDHT.start("127.0.0.1", 0, [PeerAddress.parse(p) for p in running.peers], config=CLIENT)
    try:
        yield dht
    finally:
        await dht.stop()


async def _genuine(running: RunningSwarm) -> tuple[str, int, int, set[str]]:
    """(model, num_blocks, hidden_size, server ids) as a fresh client sees them (not the fakes)."""
    async with client_dht(running) as dht:
        [info] = await dht.list_models()
        swarm_map = await dht.get_swarm_map(info.model)
        real = {s.server_id for s in swarm_map.servers if not s.address.endswith(f":{DEAD_PORT}")}
        return info.model, info.num_blocks, info.hidden_size, real


async def _issued(dht: SwarmDHT, server_ids: set[str]) -> dict[str, float]:
    records = {sid: await dht.get_record(sid) for sid in server_ids}
    return {sid: r.issued_at if r else 0.0 for sid, r in records.items()}


async def _wait_reannounced(running: RunningSwarm, server_ids: set[str], after: float, rounds: int = 1) -> None:
    """Waits until every server has announced `rounds` times after `after` (time.time())."""
    async with client_dht(running) as dht:
        for _ in range(rounds):
            deadline = time.monotonic() + 6 * UPDATE_PERIOD + 10
            while min((await _issued(dht, server_ids)).values()) <= after:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(server_ids)} servers did not re-announce after {after}")
                await asyncio.sleep(0.2)
            after = time.time()


async def _dht_nodes(running: RunningSwarm) -> list[tuple[str, int]]:
    async with client_dht(running) as dht:
        found = await dht.node.find_nodes(os.urandom(20))
        return [p.address for p in found]


class Attacker:
    """One UDP socket speaking the DHT wire format (no swarm token)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.received: list[bytes] = []

    def send(self, address: tuple[str, int], name: str, *args: object) -> None:
        self.sock.sendto(b"\x00" + os.urandom(20) + umsgpack.packb([name, list(args)]), address)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.received.append(self.sock.recvfrom(65536)[0])

    async def read_through(self, address: tuple[str, int]) -> None:
        """Returns once the node at `address` has handled everything sent to it so far.

        The probe is sent again every second: after a flood the node's receive buffer may
        still be full when it arrives, and UDP drops it (that is the flood's cost, not a bug)."""
        msg_id = os.urandom(20)
        sent_at = -1.0

        def answered() -> bool:
            nonlocal sent_at
            if time.monotonic() - sent_at >= 1.0:
                self.sock.sendto(b"\x00" + msg_id + umsgpack.packb(["stun", []]), address)
                sent_at = time.monotonic()
            self.drain()
            return any(d[:21] == b"\x01" + msg_id for d in self.received)

        await async_wait_until(answered, 20, f"the DHT node at {address} answers the attacker")

    def close(self) -> None:
        self.sock.close()


def _flood_values(model: str, num_blocks: int, hidden: int, count: int) -> dict[str, list[bytes]]:
    """Per key, `count` validly signed max-lifetime entries of fresh identities at a dead port."""
    values: dict[str, list[bytes]] = {}
    for _ in range(count):
        identity = Identity.generate()
        record = make_record(identity, (0, num_blocks), model=model, num_blocks=num_blocks, port=DEAD_PORT,
                             ttl=3500.0, hidden_size=hidden)
        block = BlockEntry.from_record(record)
        for b in range(num_blocks):
            key = keys.block_key(model, b)
            values.setdefault(key, []).append(sign_entry(identity, block, key))
        entry = ModelEntry(identity.server_id, model, num_blocks, hidden, issued_at=record.issued_at,
                           expiration=record.expiration)
        for key in (keys.index_key(model), keys.MODELS_KEY):
            values.setdefault(key, []).append(sign_entry(identity, entry, key))
    return values


def _greedy_matches_local(running: RunningSwarm) -> bool:
    from client.model import AutoDistributedModelForCausalLM

    ids = torch.randint(1, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    reference = AutoModelForCausalLM.from_pretrained(running.model_dir, dtype=torch.float32).eval()
    expected = reference.generate(ids, max_new_tokens=8, do_sample=False)
    model = AutoDistributedModelForCausalLM.from_pretrained(running.model_dir, running.peers)
    try:
        return bool(torch.equal(model.generate(ids, max_new_tokens=8, do_sample=False), expected))
    finally:
        model.close()


def test_a_flood_of_signed_records_leaves_genuine_servers_listed(running: RunningSwarm) -> None:
    async def attack() -> tuple[set[str], list[set[str]], int]:
        model, num_blocks, hidden, genuine = await _genuine(running)
        assert len(genuine) == 2
        await _wait_reannounced(running, genuine, time.time(), rounds=2)  # proven
        targets = await _dht_nodes(running)
        assert len(targets) == 3  # the bootstrap node and both servers'
        attacker = Attacker()
        try:
            for key, raws in _flood_values(model, num_blocks, hidden, 300).items():
                for group in batches(raws):
                    for target in targets:
                        attacker.send(target, "store", None, keys.key_digest(key), encode_value(group))
            for target in targets:
                await attacker.read_through(target)
        finally:
            attacker.close()
        await _wait_reannounced(running, genuine, time.time())  # announces still land on full keys
        async with client_dht(running) as dht:
            swarm_map = await dht.get_swarm_map(model, num_blocks)
            listed = [{s.server_id for s in coverage.servers} for coverage in swarm_map.blocks]
            fakes = len({e.server_id for e in await dht.get_block_entries(model, 0)} - genuine)
        return genuine, listed, fakes

    genuine, listed, fakes = asyncio.run(attack())
    assert fakes >= 200  # the flood landed: the key's unproven room is full of fakes
    holders = [genuine & ids for ids in listed]
    assert all(len(h) == 1 for h in holders), holders  # each block still lists its genuine server
    assert _greedy_matches_local(running)


def test_a_ping_flood_with_random_ids_does_not_slow_announces_or_lookups(running: RunningSwarm) -> None:
    async def client_time(model: str) -> float:
        start = time.perf_counter()
        async with client_dht(running) as dht:
            assert len(await dht.get_block_entries(model, 0)) >= 1
        return time.perf_counter() - start

    async def attack() -> tuple[float, float, float, int]:
        model, _, _, genuine = await _genuine(running)
        before = min([await client_time(model) for _ in range(3)])
        targets = await _dht_nodes(running)
        attacker = Attacker()
        try:
            started = time.perf_counter()
            for i in range(5000):
                attacker.send(targets[i % len(targets)], "ping", os.urandom(20))
                if i % 500 == 0:
                    attacker.drain()
            sent_in = time.perf_counter() - started
            for target in targets:
                await attacker.read_through(target)
            await _wait_reannounced(running, genuine, time.time(), rounds=2)
            after = min([await client_time(model) for _ in range(3)])
            attacker.drain()
            pings_back = sum(1 for d in attacker.received if d[:1] == b"\x00")
        finally:
            attacker.close()
        return before, after, sent_in, pings_back

    before, after, sent_in, pings_back = asyncio.run(attack())
    assert sent_in < 2.0
    assert after < before + 1.0, (before, after)
    assert pings_back <= 3 * 3  # at most the contact burst (2) and a refill per node checked us

