"""Per-key entry storage: merge, replay, expiry and caps (pure, no sockets)."""

from __future__ import annotations

import pytest

from swarm.codec.entries import VerifiedEntry, open_entry
from swarm.dht import keys
from swarm.dht.storage import EntryStore, StorageLimits, newest_per_server
from swarm.errors import RecordRejected
from swarm.identity import Identity
from tests.dht_factories import model_entry, signed_block, verified

T0 = 1_800_000_000.0
KEY = keys.key_digest(keys.block_key("org/tiny-model", 0))
A, B, C = Identity.generate(), Identity.generate(), Identity.generate()


def newest_of(store: EntryStore, now: float, dkey: bytes = KEY, key: str = "") -> list[VerifiedEntry]:
    key = key or keys.block_key("org/tiny-model", 0)
    return [open_entry(raw, key, now) for raw in store.get(dkey, now)]


def test_stores_merge_per_server() -> None:
    store = EntryStore()
    a, b = signed_block(A, issued_at=T0), signed_block(B, issued_at=T0 + 1)
    assert store.put(KEY, a, T0 + 2) and store.put(KEY, b, T0 + 2)
    assert store.get(KEY, T0 + 2) == [b.raw, a.raw]  # newest first
    assert store.get(keys.key_digest("other"), T0) == []


def test_newer_replaces_older_and_replays_are_rejected() -> None:
    store = EntryStore()
    old, new = signed_block(A, issued_at=T0), signed_block(A, issued_at=T0 + 5, port=6000)
    store.put(KEY, old, T0 + 6)
    store.put(KEY, new, T0 + 6)
    assert store.get(KEY, T0 + 6) == [new.raw]
    with pytest.raises(RecordRejected, match="replay"):
        store.put(KEY, old, T0 + 6)
    assert store.put(KEY, new, T0 + 6) is False  # the same entry again: a no-op
    same_time = signed_block(A, issued_at=T0 + 5, port=7000)
    with pytest.raises(RecordRejected, match="replay"):
        store.put(KEY, same_time, T0 + 6)
    assert store.get(KEY, T0 + 6) == [new.raw]


def test_expired_entries_vanish_and_cannot_be_replaced_by_older_ones() -> None:
    store = EntryStore(StorageLimits(replay_window=100.0))
    long_lived = signed_block(A, issued_at=T0, ttl=60.0)
    short_lived = signed_block(A, issued_at=T0 + 1, ttl=5.0)  # e.g. an OFFLINE announcement
    store.put(KEY, long_lived, T0 + 1)
    store.put(KEY, short_lived, T0 + 2)
    assert store.get(KEY, T0 + 10) == []
    with pytest.raises(RecordRejected, match="older than one that expired"):
        store.put(KEY, long_lived, T0 + 10)
    assert store.purge(T0 + 200) == 0  # watermark forgotten after the replay window
    assert len(store) == 0


def test_entry_cap_evicts_unproven_entries_first_stored_first() -> None:
    store = EntryStore(StorageLimits(max_entries_per_key=2, proven_after=1.0))
    store.put(KEY, signed_block(A, issued_at=T0, ttl=30), T0)
    store.put(KEY, signed_block(B, issued_at=T0, ttl=60), T0 + 1)
    store.put(KEY, signed_block(C, issued_at=T0, ttl=90), T0 + 2)  # A was stored first: it goes
    assert {e.server_id for e in newest_of(store, T0 + 2)} == {B.server_id, C.server_id}
    store.put(KEY, signed_block(B, issued_at=T0 + 5, ttl=60), T0 + 5)  # B re-announces: proven
    store.put(KEY, signed_block(C, issued_at=T0 + 5, ttl=90), T0 + 5)  # C too
    with pytest.raises(RecordRejected, match="full"):  # a newcomer cannot push a proven one out
        store.put(KEY, signed_block(Identity.generate(), issued_at=T0 + 6, ttl=3600), T0 + 6)
    assert {e.server_id for e in newest_of(store, T0 + 6)} == {B.server_id, C.server_id}


def test_byte_cap_bounds_a_key() -> None:
    one = signed_block(A, issued_at=T0)
    store = EntryStore(StorageLimits(max_value_bytes=3 * len(one.raw) + 10))
    for _ in range(6):
        store.put(KEY, signed_block(Identity.generate(), issued_at=T0), T0)
    assert sum(len(r) for r in store.get(KEY, T0)) <= 3 * len(one.raw) + 10
    assert len(store.get(KEY, T0)) == 3


def test_models_key_keeps_small_models_when_a_big_one_floods_it() -> None:
    store = EntryStore(StorageLimits(max_entries_per_key=4))
    dkey = keys.key_digest(keys.MODELS_KEY)
    small = verified(A, model_entry(A, "small", issued_at=T0, ttl=10), keys.MODELS_KEY, now=T0)
    store.put(dkey, small, T0)
    for _ in range(6):
        identity = Identity.generate()
        entry = verified(identity, model_entry(identity, "big", issued_at=T0, ttl=60), keys.MODELS_KEY, now=T0)
        store.put(dkey, entry, T0)
    assert A.server_id in {e.server_id for e in newest_of(store, T0, dkey, keys.MODELS_KEY)}


def test_key_count_cap() -> None:
    store = EntryStore(StorageLimits(max_keys=1, replay_window=6.0))
    store.put(KEY, signed_block(A, issued_at=T0, ttl=5), T0)
    other = keys.key_digest(keys.block_key("org/tiny-model", 1))
    with pytest.raises(RecordRejected, match="keys"):
        store.put(other, signed_block(A, 1, issued_at=T0), T0)
    store.put(other, signed_block(A, 1, issued_at=T0 + 9), T0 + 9)  # the first key expired, its watermark too


def test_items_lists_live_keys() -> None:
    store = EntryStore()
    store.put(KEY, signed_block(A, issued_at=T0, ttl=5), T0)
    assert store.items(T0) == [(KEY, store.get(KEY, T0))]
    assert [entries for _, entries in store.items(T0 + 6)] in ([], [[]])


def test_newest_per_server_merges_answers() -> None:
    a_old, a_new = signed_block(A, issued_at=T0), signed_block(A, issued_at=T0 + 3)
    b = signed_block(B, issued_at=T0 + 1)
    assert newest_per_server([a_old, b, a_new, a_old]) == [a_new, b]
