"""Signed DHT entries: round trips, and every way a peer's entry must be refused."""

from __future__ import annotations

import dataclasses
import time

import pytest

from swarm.codec import bodies
from swarm.codec.entries import (
    EntryKind,
    EntryLimits,
    decode_value,
    encode_value,
    entry_from_message,
    entry_to_message,
    open_entry,
    sign_block_entry,
    sign_entry,
    sign_model_entry,
    sign_record,
)
from swarm.dht.keys import block_key, index_key, server_key
from swarm.errors import CodecError, InvalidInput, RecordRejected
from swarm.identity import Identity
from swarm.records import BlockEntry, BlockRange, ServerState
from swarm.v1 import record_pb2
from tests.dht_factories import MODEL, block_entry, make_record, model_entry

ALICE = Identity.generate()
MALLORY = Identity.generate()


def test_record_round_trip_keeps_every_field() -> None:
    record = make_record(ALICE, next_hop_rtt_ms={MALLORY.server_id: 3.5}, dtype="bfloat16", quantization="nf4")
    key = server_key(ALICE.server_id)
    entry = open_entry(sign_record(ALICE, record, key), key, time.time())
    assert entry.kind is EntryKind.RECORD and entry.server_id == ALICE.server_id
    assert entry.body == record
    assert entry.public_key == ALICE.public_key


def test_block_and_model_entries_round_trip() -> None:
    block = block_entry(ALICE, (2, 6))
    raw = sign_block_entry(ALICE, block, block_key(MODEL, 3))
    assert open_entry(raw, block_key(MODEL, 3), time.time(), expected_kind=EntryKind.BLOCK).body == block
    model = model_entry(ALICE)
    raw = sign_model_entry(ALICE, model, index_key(MODEL))
    assert open_entry(raw, index_key(MODEL), time.time()).body == model


def test_block_entry_carries_the_network_figure() -> None:
    block = block_entry(ALICE, (2, 6))
    assert block.network_tokens_per_s == 1000.0 and block.throughput == make_record(ALICE).throughput
    raw = sign_block_entry(ALICE, block, block_key(MODEL, 3))
    body = open_entry(raw, block_key(MODEL, 3), time.time()).body
    assert isinstance(body, BlockEntry) and body.network_tokens_per_s == 1000.0


def test_block_entry_of_a_server_without_the_network_field_still_opens() -> None:
    """An older server's BlockEntry has no field 7: it opens, its network figure unmeasured (0)."""
    block = block_entry(ALICE, (2, 6))
    message = bodies.block_entry_to_proto(block)
    message.ClearField("network_tokens_per_s")
    key = block_key(MODEL, 3)
    payload = record_pb2.DhtPayload(key=key, issued_at=block.issued_at, expiration=block.expiration)
    payload.block.CopyFrom(message)
    data = payload.SerializeToString(deterministic=True)
    raw = record_pb2.SignedEntry(payload=data, public_key=ALICE.public_key, signature=ALICE.sign(data))
    body = open_entry(raw.SerializeToString(), key, time.time()).body
    assert body == dataclasses.replace(block, network_tokens_per_s=0.0)


def test_server_id_comes_from_the_key_not_the_peer() -> None:
    record = make_record(ALICE)
    with pytest.raises(InvalidInput):
        sign_record(MALLORY, record, server_key(ALICE.server_id))


def _signed(identity: Identity = ALICE, **kwargs: object) -> bytes:
    record = make_record(identity, **kwargs)  # type: ignore[arg-type]
    return sign_record(identity, record, server_key(identity.server_id))


def _swap_public_key(raw: bytes, public_key: bytes) -> bytes:
    message = entry_to_message(raw)
    message.public_key = public_key
    return entry_from_message(message)


def test_forged_public_key_rejected() -> None:
    raw = _signed(MALLORY)
    with pytest.raises(RecordRejected, match="signature"):
        open_entry(_swap_public_key(raw, ALICE.public_key), None, time.time())


def test_tampered_payload_rejected() -> None:
    raw = _signed()
    message = entry_to_message(raw)
    payload = bytearray(message.payload)
    index = bytes(payload).index(b"127.0.0.1")
    payload[index] = ord("9")
    message.payload = bytes(payload)
    with pytest.raises(RecordRejected, match="signature"):
        open_entry(entry_from_message(message), None, time.time())


def test_unsigned_rejected() -> None:
    message = entry_to_message(_signed())
    message.signature = b""
    with pytest.raises(RecordRejected, match="unsigned"):
        open_entry(entry_from_message(message), None, time.time())


def test_wrong_key_rejected() -> None:
    with pytest.raises(RecordRejected, match="not"):
        open_entry(_signed(), server_key(MALLORY.server_id), time.time())


def test_expired_rejected() -> None:
    raw = _signed(issued_at=time.time() - 100, ttl=10)
    with pytest.raises(RecordRejected, match="expired"):
        open_entry(raw, None, time.time())


def test_future_and_overlong_entries_rejected() -> None:
    with pytest.raises(RecordRejected, match="future"):
        open_entry(_signed(issued_at=time.time() + 3600), None, time.time())
    with pytest.raises(RecordRejected, match="lives"):
        open_entry(_signed(ttl=10 * 3600), None, time.time())


def test_oversized_rejected() -> None:
    raw = _signed()
    with pytest.raises(RecordRejected, match="bytes"):
        open_entry(raw, None, time.time(), EntryLimits(max_entry_bytes=len(raw) - 1))
    compact = sign_block_entry(ALICE, block_entry(ALICE), block_key(MODEL, 0))
    with pytest.raises(RecordRejected, match="block entry"):
        open_entry(compact, None, time.time(), EntryLimits(max_compact_entry_bytes=len(compact) - 1))


def test_wrong_body_kind_rejected() -> None:
    with pytest.raises(RecordRejected, match="needs a block"):
        open_entry(_signed(), None, time.time(), expected_kind=EntryKind.BLOCK)


@pytest.mark.parametrize("raw", [b"", b"\xff\xff\xff", b"\x0a\x05abc", bytes(range(256))])
def test_garbage_rejected(raw: bytes) -> None:
    with pytest.raises(RecordRejected):
        open_entry(raw, None, time.time())


@pytest.mark.parametrize(
    "change",
    [
        {"address": "no-port"},
        {"address": "host:70000"},
        {"address": "a b:80"},
        {"model": ""},
        {"model": "x" * 129},
        {"state": 0},
        {"state": 9},
        {"dtype": "float64"},
        {"quantization": "NF4"},
        {"version": "v\n1"},
        {"free_cache_tokens": -1},
        {"next_hop_rtt_ms": {"not-an-id": 1.0}},
        {"next_hop_rtt_ms": {Identity.generate().server_id: float("nan")}},
        {"next_hop_rtt_ms": {Identity.generate().server_id: 1.0 for _ in range(33)}},
        {"blocks": BlockRange(0, 13)},  # past model_num_blocks
        {"blocks": BlockRange(0, 1 << 17), "model_num_blocks": 0},
        {"hidden_size": 1 << 21},
    ],
)
def test_invalid_fields_never_signed(change: dict[str, object]) -> None:
    record = dataclasses.replace(make_record(ALICE), **change)  # type: ignore[arg-type]
    with pytest.raises(RecordRejected):
        sign_record(ALICE, record, server_key(ALICE.server_id))


def test_nan_throughput_and_bad_times_never_signed() -> None:
    entry = dataclasses.replace(block_entry(ALICE), inference_tokens_per_s=float("nan"))
    with pytest.raises(RecordRejected):
        sign_entry(ALICE, entry, block_key(MODEL, 0))
    backwards = dataclasses.replace(block_entry(ALICE), expiration=0.0)
    with pytest.raises(RecordRejected, match="before"):
        sign_entry(ALICE, backwards, block_key(MODEL, 0))
    stateless = BlockEntry(ALICE.server_id, "h:1", BlockRange(0, 1), ServerState(2), issued_at=1.0, expiration=2.0)
    assert open_entry(sign_entry(ALICE, stateless, "k"), "k", 1.5).body == stateless


def test_value_round_trip_and_garbage() -> None:
    raws = [_signed(), _signed(MALLORY)]
    assert decode_value(encode_value(raws)) == raws
    assert decode_value(b"") == []
    with pytest.raises(CodecError):
        decode_value(b"\x0a\xff\xff\xff\xff\x0f")
    with pytest.raises(CodecError, match="entries"):
        decode_value(encode_value(raws * 3), EntryLimits(max_value_entries=5))
    with pytest.raises(CodecError):
        encode_value([b"\xff"])
