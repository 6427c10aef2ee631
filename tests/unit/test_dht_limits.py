"""The size bounds of swarm.dht.config hold for entries at every field's limit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import umsgpack
from kademlia.node import Node

from swarm.codec.bodies import MAX_HIDDEN_SIZE, MAX_NUM_BLOCKS, MAX_SPEED, MAX_TOKENS
from swarm.codec.entries import DEFAULT_ENTRY_LIMITS, encode_value, open_entry, sign_entry
from swarm.dht import keys
from swarm.dht.config import MAX_DATAGRAM_BYTES, MAX_REQUEST_BYTES, MAX_STORE_VALUE_BYTES, DhtConfig
from swarm.dht.protocol import Job, SwarmProtocol
from swarm.dht.storage import EntryStore
from swarm.identity import Identity
from swarm.records import MAX_NEXT_HOPS, BlockEntry, BlockRange, ModelEntry, ServerRecord, ServerState, Throughput

LONG_MODEL = "m" * 128
LONG_ADDRESS = "h" * 122 + ":65535"
LAST_BLOCK = MAX_NUM_BLOCKS - 1
WIDEST_IP = "0000:0000:0000:0000:0000:ffff:255.255.255.255"
NEXT_HOPS = {Identity.generate().server_id: MAX_SPEED / 11 for _ in range(MAX_NEXT_HOPS)}


def _worst_record(identity: Identity) -> ServerRecord:
    now = time.time()
    return ServerRecord(
        server_id=identity.server_id,
        address=LONG_ADDRESS,
        model=LONG_MODEL,
        blocks=BlockRange(0, MAX_NUM_BLOCKS),
        state=ServerState.DRAINING,
        throughput=Throughput(MAX_SPEED / 3, MAX_SPEED / 7, MAX_SPEED / 9),
        free_cache_tokens=MAX_TOKENS,
        cache_tokens=MAX_TOKENS,
        dtype="bfloat16",
        quantization="q" * 16,
        version="v" * 32,
        next_hop_rtt_ms=NEXT_HOPS,
        model_num_blocks=MAX_NUM_BLOCKS,
        hidden_size=MAX_HIDDEN_SIZE,
        issued_at=now,
        expiration=now + 3600,
    )


def _worst_block_entry(identity: Identity) -> BlockEntry:
    return BlockEntry.from_record(_worst_record(identity))


def test_a_full_record_fits_one_store_request() -> None:
    identity = Identity.generate()
    raw = sign_entry(identity, _worst_record(identity), keys.server_key(identity.server_id))
    assert len(raw) <= DEFAULT_ENTRY_LIMITS.max_entry_bytes
    value = encode_value([raw])
    assert len(value) <= MAX_STORE_VALUE_BYTES
    request = umsgpack.packb(["store", [os.urandom(20), os.urandom(20), value]])
    assert len(request) <= MAX_REQUEST_BYTES
    assert len(umsgpack.packb(["store", [os.urandom(20), os.urandom(20), b"\0" * MAX_STORE_VALUE_BYTES]])) <= MAX_REQUEST_BYTES


def test_compact_entries_stay_under_their_limit() -> None:
    identity = Identity.generate()
    block = sign_entry(identity, _worst_block_entry(identity), keys.block_key(LONG_MODEL, LAST_BLOCK))
    now = time.time()
    model = ModelEntry(identity.server_id, LONG_MODEL, MAX_NUM_BLOCKS, MAX_HIDDEN_SIZE, issued_at=now, expiration=now + 3600)
    index = sign_entry(identity, model, keys.index_key(LONG_MODEL))
    assert max(len(block), len(index)) <= DEFAULT_ENTRY_LIMITS.max_compact_entry_bytes


def test_the_largest_lookup_answer_fits_one_datagram() -> None:
    config = DhtConfig()
    jobs: list[Job] = []
    protocol = SwarmProtocol(os.urandom(20), EntryStore(config.storage), config, _queue(jobs))
    for i in range(config.ksize):
        protocol.router.add_contact(Node(os.urandom(20), WIDEST_IP, 65535))
    key = keys.block_key(LONG_MODEL, LAST_BLOCK)
    dkey = keys.key_digest(key)
    now = time.time()
    for _ in range(config.storage.max_entries_per_key + 20):
        identity = Identity.generate()
        raw = sign_entry(identity, _worst_block_entry(identity), key)
        protocol.store.put(dkey, open_entry(raw, key, now), now)
    stored = protocol.store.get(dkey, now)
    assert len(stored) >= 100  # a popular block of 100 servers is readable even at worst
    answer = protocol.rpc_find_value(("127.0.0.1", 1), os.urandom(20), dkey)
    assert isinstance(answer, dict) and len(answer["nodes"]) == config.ksize
    assert 1 + 20 + len(umsgpack.packb(answer)) <= MAX_DATAGRAM_BYTES


def _queue(jobs: list[Job]) -> Callable[[Job], bool]:
    def enqueue(job: Job) -> bool:
        jobs.append(job)
        return True

    return enqueue
