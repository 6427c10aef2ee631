"""The DHT key space: parsing, and which entries fit which key."""

from __future__ import annotations

import hashlib
import time

import pytest

from swarm.codec.entries import open_entry, sign_entry
from swarm.dht import keys
from swarm.dht.keys import KeyKind, ParsedKey, check_entry_fits, parse_key
from swarm.errors import RecordRejected
from swarm.identity import Identity
from tests.dht_factories import MODEL, block_entry, make_record, model_entry

ALICE, BOB = Identity.generate(), Identity.generate()


@pytest.mark.parametrize(
    "key, parsed",
    [
        ("org/name/block/7", ParsedKey(KeyKind.BLOCK, model="org/name", block=7)),
        ("m/block/0", ParsedKey(KeyKind.BLOCK, model="m", block=0)),
        ("x/block/3/index", ParsedKey(KeyKind.INDEX, model="x/block/3")),
        ("org/name/index", ParsedKey(KeyKind.INDEX, model="org/name")),
        ("swarm/models", ParsedKey(KeyKind.MODELS)),
        (f"server/{ALICE.server_id}", ParsedKey(KeyKind.RECORD, server_id=ALICE.server_id)),
        (f"server/{ALICE.server_id}/index", ParsedKey(KeyKind.INDEX, model=f"server/{ALICE.server_id}")),
    ],
)
def test_parse_key(key: str, parsed: ParsedKey) -> None:
    assert parse_key(key) == parsed


@pytest.mark.parametrize("key", ["", "m/block/", "m/block/07", "m/block/-1", "/index", "server/abc", "other"])
def test_keys_outside_the_key_space(key: str) -> None:
    with pytest.raises(RecordRejected):
        parse_key(key)


def test_builders_round_trip_and_digest() -> None:
    assert parse_key(keys.block_key(MODEL, 5)) == ParsedKey(KeyKind.BLOCK, model=MODEL, block=5)
    assert parse_key(keys.index_key(MODEL)).model == MODEL
    assert parse_key(keys.server_key(BOB.server_id)).server_id == BOB.server_id
    assert keys.key_digest("k") == hashlib.sha1(b"k").digest()


def _open(identity: Identity, body: object, key: str):  # type: ignore[no-untyped-def]
    return open_entry(sign_entry(identity, body, key), key, time.time())  # type: ignore[arg-type]


def test_entries_fit_their_keys() -> None:
    record_key = keys.server_key(ALICE.server_id)
    check_entry_fits(parse_key(record_key), _open(ALICE, make_record(ALICE), record_key))
    block = keys.block_key(MODEL, 3)
    check_entry_fits(parse_key(block), _open(ALICE, block_entry(ALICE, (0, 4)), block))
    check_entry_fits(parse_key(keys.MODELS_KEY), _open(ALICE, model_entry(ALICE, "other"), keys.MODELS_KEY))


@pytest.mark.parametrize(
    "identity, body, key",
    [
        (BOB, make_record(BOB), keys.server_key(ALICE.server_id)),  # someone else's record key
        (ALICE, block_entry(ALICE, (0, 4)), keys.block_key(MODEL, 4)),  # a block it does not hold
        (ALICE, model_entry(ALICE, "other"), keys.index_key(MODEL)),  # another model's index
        (ALICE, block_entry(ALICE, (0, 4)), keys.index_key(MODEL)),  # wrong body kind
        (ALICE, make_record(ALICE), keys.block_key(MODEL, 0)),
    ],
)
def test_entries_that_do_not_fit(identity: Identity, body: object, key: str) -> None:
    with pytest.raises(RecordRejected):
        check_entry_fits(parse_key(key), _open(identity, body, key))
