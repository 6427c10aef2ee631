"""The server record from state and measurements, and placement crediting self and peers alike."""

from __future__ import annotations

import dataclasses
import time

from node.placement import ServerSpan, block_throughputs, credited_throughput, span_from_entry, span_from_record
from node.record import Measurements, ServerFacts, build_record
from node.state import ServingState
from swarm.codec.entries import open_entry, sign_block_entry
from swarm.dht.keys import block_key
from swarm.identity import Identity
from swarm.records import BlockEntry, BlockRange, ServerRecord, ServerState, Throughput

ME, PEER = Identity.generate(), Identity.generate()
MODEL = "org/tiny-model"
# float32-exact figures: the compact entry carries speeds as float32
COMPUTE = Throughput(inference_tokens_per_s=12.5, forward_tokens_per_s=250.0)


def facts(identity: Identity, port: int) -> ServerFacts:
    return ServerFacts(identity.server_id, f"127.0.0.1:{port}", MODEL, model_num_blocks=4, hidden_size=64,
                       cache_tokens=8192)


def record_of(identity: Identity, port: int, measurements: Measurements) -> ServerRecord:
    state = ServingState(MODEL, BlockRange(0, 2), phase=ServerState.ONLINE)
    return build_record(facts(identity, port), state, measurements, free_cache_tokens=100, dtype="bfloat16")


def test_build_record_states_state_and_measurements_and_leaves_times_to_the_dht() -> None:
    measurements = Measurements(COMPUTE, network_tokens_per_s=80.0, next_hop_rtt_ms={PEER.server_id: 2.5})
    record = record_of(ME, 5000, measurements)
    assert (record.server_id, record.address, record.model, record.blocks, record.state) == (
        ME.server_id, "127.0.0.1:5000", MODEL, BlockRange(0, 2), ServerState.ONLINE)
    assert record.throughput == Throughput(12.5, 250.0, 80.0)
    assert (record.free_cache_tokens, record.cache_tokens, record.dtype) == (100, 8192, "bfloat16")
    assert record.next_hop_rtt_ms == {PEER.server_id: 2.5}
    assert (record.model_num_blocks, record.hidden_size) == (4, 64)
    assert record.issued_at == record.expiration == 0.0


def test_measurements_convert_bandwidth_to_hidden_state_tokens() -> None:
    # hidden size 64, float32: 256 bytes a token
    linked = Measurements(COMPUTE).with_links({PEER.server_id: 1.0}, 25_600.0, hidden_size=64)
    assert linked.network_tokens_per_s == 100.0 and linked.throughput.network_tokens_per_s == 100.0
    unmeasured = linked.with_links({}, None, hidden_size=64)
    assert unmeasured.network_tokens_per_s == 100.0 and unmeasured.next_hop_rtt_ms == {}
    assert unmeasured.with_compute(Throughput(1.0, 2.0)).throughput == Throughput(1.0, 2.0, 100.0)


def peer_as_read_from_dht(record: ServerRecord) -> ServerSpan:
    """The span a server builds for a peer: its compact entry, signed, encoded, opened."""
    now = time.time()
    entry = dataclasses.replace(BlockEntry.from_record(record), issued_at=now, expiration=now + 60)
    key = block_key(MODEL, 0)
    body = open_entry(sign_block_entry(PEER, entry, key), key, now).body
    assert isinstance(body, BlockEntry)
    return span_from_entry(body)


def test_placement_credits_itself_and_an_identical_peer_alike() -> None:
    # the network link is the bottleneck: both must be credited with it, not the compute speed
    measurements = Measurements(COMPUTE, network_tokens_per_s=80.0)
    me = span_from_record(record_of(ME, 5000, measurements))
    peer = peer_as_read_from_dht(record_of(PEER, 5001, measurements))
    assert me.throughput == peer.throughput == 80.0 == credited_throughput(measurements.throughput)
    assert (me.blocks, me.state) == (peer.blocks, peer.state)
    alone_me, alone_peer = block_throughputs([me], 4), block_throughputs([peer], 4)
    assert alone_me == alone_peer == [80.0, 80.0, 0.0, 0.0]


def test_unmeasured_servers_count_as_one_token_per_second_for_self_and_peers() -> None:
    me = span_from_record(record_of(ME, 5000, Measurements()))
    peer = peer_as_read_from_dht(record_of(PEER, 5001, Measurements()))
    assert me.throughput == peer.throughput == 1.0
