"""Admission and eviction of entries under a full key (pure tables), and the store using it."""

from __future__ import annotations

import pytest

from swarm.dht import keys
from swarm.dht.admission import Standing, choose_victim, is_proven
from swarm.dht.storage import EntryStore, StorageLimits
from swarm.errors import RecordRejected
from swarm.identity import Identity
from tests.dht_factories import signed_block
from tests.unit.test_storage import newest_of

T0 = 1_800_000_000.0
KEY = keys.key_digest(keys.block_key("org/tiny-model", 0))


def s(first: float, expires: float = 100.0, proven: bool = False, group: str = "") -> Standing:
    return Standing(first_stored=first, expiration=expires, group=group, proven=proven)


VICTIM_TABLE = [
    # (entries, newcomer, victim, why)
    ({"a": s(1), "b": s(2), "new": s(9)}, "new", "a", "unproven: first stored first"),
    ({"a": s(1, 500), "b": s(1, 50), "new": s(9)}, "new", "b", "tie on first stored: expires first"),
    ({"a": s(1, 50), "b": s(1, 50), "new": s(9)}, "new", "a", "full tie: server id"),
    ({"a": s(1, proven=True), "b": s(5), "new": s(9)}, "new", "b", "the proven one stays"),
    ({"a": s(1, proven=True), "b": s(2, proven=True), "new": s(9)}, "new", "new", "only proven: refused"),
    ({"a": s(1, 10, True), "b": s(2, 5, True), "new": s(3, 90, True)}, "new", "b",
     "all proven (a refresh grew the key): expires first"),
    ({"a": s(1, group="big"), "b": s(2, group="big"), "c": s(0, group="small"), "new": s(9, group="small")},
     "new", "a", "largest unproven group gives up its oldest, not the small model's entry"),
    ({"a": s(1, proven=True, group="big"), "b": s(3, group="small"), "c": s(2, group="small"),
      "new": s(9, group="big")}, "new", "c", "proven entries do not count in the group sizes"),
    ({"a": s(4, group="x"), "b": s(3, group="y"), "new": s(9, group="z")}, "new", "a", "group tie: by name"),
]


@pytest.mark.parametrize(("entries", "newcomer", "victim", "why"), VICTIM_TABLE, ids=[r[3] for r in VICTIM_TABLE])
def test_choose_victim(entries: dict[str, Standing], newcomer: str, victim: str, why: str) -> None:
    assert choose_victim(entries, newcomer) == victim, why


PROVEN_TABLE = [
    # (first_stored, was_proven, now, proven_after, proven)
    (10.0, False, 10.5, 1.0, False),  # a burst of two versions is not a second round
    (10.0, False, 11.0, 1.0, True),
    (10.0, False, 40.0, 30.0, True),
    (10.0, True, 10.0, 1.0, True),  # once proven, stays proven while stored
]


@pytest.mark.parametrize(("first", "was", "now", "after", "proven"), PROVEN_TABLE)
def test_is_proven(first: float, was: bool, now: float, after: float, proven: bool) -> None:
    assert is_proven(first, was, now, after) is proven


def test_a_flood_of_fresh_identities_cannot_push_out_servers_that_keep_announcing() -> None:
    store = EntryStore(StorageLimits(max_entries_per_key=8, proven_after=1.0))
    genuine = [Identity.generate() for _ in range(3)]
    for round_ in range(2):  # two announce rounds, 10 s apart
        for identity in genuine:
            store.put(KEY, signed_block(identity, issued_at=T0 + 10 * round_, ttl=30), T0 + 10 * round_)
    rejected = 0
    for i in range(40):  # max-lifetime fakes from fresh identities
        try:
            store.put(KEY, signed_block(Identity.generate(), issued_at=T0 + 11, ttl=3600), T0 + 11 + i / 100)
        except RecordRejected:
            rejected += 1
    assert len(store.get(KEY, T0 + 12)) == 8
    ids = {e.server_id for e in newest_of(store, T0 + 12)}
    assert {g.server_id for g in genuine} <= ids
    assert rejected == 0  # fakes replace each other (5 slots of unproven room), never the genuine


def test_expired_entries_go_before_anything_else() -> None:
    store = EntryStore(StorageLimits(max_entries_per_key=2, proven_after=1.0))
    a, b = Identity.generate(), Identity.generate()
    store.put(KEY, signed_block(a, issued_at=T0, ttl=5), T0)
    store.put(KEY, signed_block(a, issued_at=T0 + 2, ttl=5), T0 + 2)  # proven, expires at T0 + 7
    store.put(KEY, signed_block(b, issued_at=T0, ttl=60), T0)
    store.put(KEY, signed_block(b, issued_at=T0 + 2, ttl=60), T0 + 2)  # proven
    newcomer = Identity.generate()
    with pytest.raises(RecordRejected):
        store.put(KEY, signed_block(newcomer, issued_at=T0 + 3, ttl=60), T0 + 3)
    assert store.put(KEY, signed_block(newcomer, issued_at=T0 + 8, ttl=60), T0 + 8)  # a expired
