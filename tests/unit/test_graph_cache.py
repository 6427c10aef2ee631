"""node/graph_cache.py: kept training graphs under a byte budget, by client address and pass id."""

from __future__ import annotations

import random

import pytest
import torch

from node.graph_cache import GraphCache, KeptPass, KeptPiece, tuning_key
from swarm.records import BlockRange
from swarm.tuning import Tuning

STACK = object()
HIDDEN = torch.zeros(1, 2, 4)  # 32 bytes


def _kept(*piece_bytes: int, hidden: torch.Tensor = HIDDEN) -> KeptPass:
    pieces = tuple(KeptPiece(BlockRange(i, i + 1), hidden, hidden, (), size) for i, size in enumerate(piece_bytes))
    return KeptPass(STACK, BlockRange(0, len(piece_bytes)), hidden, None, ("none",), None, pieces)


def test_kept_bytes_count_the_input_and_every_piece() -> None:
    assert _kept(100, 50).nbytes == 32 + 150


def test_take_returns_the_pass_once_and_only_to_its_address_and_id() -> None:
    cache = GraphCache(10_000)
    kept = _kept(100)
    assert cache.put("10.0.0.1", "a" * 32, kept, 0.0) == 1
    assert cache.take("10.0.0.2", "a" * 32, 1.0) is None  # another address
    assert cache.take("10.0.0.1", "b" * 32, 1.0) is None  # another pass
    assert cache.take("10.0.0.1", "a" * 32, 1.0) is kept
    assert cache.take("10.0.0.1", "a" * 32, 1.0) is None
    assert cache.used == 0 and len(cache) == 0


def test_oldest_passes_make_room_for_new_ones() -> None:
    cache = GraphCache(3 * 132)
    for index in range(5):
        cache.put("peer", str(index), _kept(100), float(index))
    assert len(cache) == 3 and cache.used == 3 * 132
    assert [cache.take("peer", str(index), 5.0) is not None for index in range(5)] == [False, False, True, True, True]


@pytest.mark.parametrize("budget, kept_pieces", [(32 + 300, 3), (32 + 299, 2), (32 + 100, 1), (32 + 99, 0), (0, 0)])
def test_a_pass_over_the_budget_keeps_its_leading_pieces(budget: int, kept_pieces: int) -> None:
    cache = GraphCache(budget)
    cache.put("peer", "x", _kept(1), 0.0)  # its own older pass: dropped if it is in the way
    assert cache.put("peer", "p", _kept(100, 100, 100), 0.0) == kept_pieces
    taken = cache.take("peer", "p", 0.0)
    assert (len(taken.pieces) if taken else 0) == kept_pieces
    assert taken is None or [p.blocks for p in taken.pieces] == [BlockRange(i, i + 1) for i in range(kept_pieces)]
    assert cache.used <= budget


def test_passes_expire_after_the_ttl() -> None:
    cache = GraphCache(10_000, ttl=10.0)
    cache.put("peer", "old", _kept(100), 0.0)
    cache.put("peer", "new", _kept(100), 5.0)
    assert cache.take("peer", "old", 10.0) is None
    assert cache.used == 132  # the expired one's bytes are free again
    assert cache.take("peer", "new", 14.9) is not None


def test_putting_the_same_id_again_replaces_the_pass() -> None:
    cache = GraphCache(10_000)
    cache.put("peer", "p", _kept(100), 0.0)
    second = _kept(50)
    cache.put("peer", "p", second, 1.0)
    assert cache.used == 82 and cache.take("peer", "p", 1.0) is second


def test_a_backward_matches_only_the_same_inputs() -> None:
    kept = _kept(10)
    assert kept.matches(STACK, BlockRange(0, 1), HIDDEN.clone(), None, None)
    assert not kept.matches(object(), BlockRange(0, 1), HIDDEN, None, None)  # the blocks were reloaded
    assert not kept.matches(STACK, BlockRange(0, 2), HIDDEN, None, None)
    assert not kept.matches(STACK, BlockRange(0, 1), HIDDEN + 1, None, None)
    assert not kept.matches(STACK, BlockRange(0, 1), HIDDEN.double(), None, None)
    assert not kept.matches(STACK, BlockRange(0, 1), HIDDEN, torch.ones(1, 2), None)
    assert not kept.matches(STACK, BlockRange(0, 1), HIDDEN, None, Tuning(adapter="style"))


def test_tuning_keys() -> None:
    prompts = {0: torch.zeros(1, 1, 4)}
    assert tuning_key(None) == ("none",)
    assert tuning_key(Tuning(adapter="style")) == ("adapter", "style")
    assert tuning_key(Tuning(prompts=prompts, digest=b"d" * 32)) == ("digest", b"d" * 32, 1.0)
    assert tuning_key(Tuning(prompts=prompts)) is None  # unidentifiable: never kept


def test_a_lone_address_may_fill_the_whole_budget() -> None:
    cache = GraphCache(4 * 132, peer_share=0.5)
    for index in range(6):
        cache.put("peer", str(index), _kept(100), float(index))
    assert cache.used == 4 * 132 and cache.held("peer") == 4 * 132  # borrowed beyond its half


def test_a_flood_from_one_address_evicts_its_own_passes_not_anothers_within_its_share() -> None:
    cache = GraphCache(4 * 132, peer_share=0.5)
    victim = _kept(100)
    cache.put("victim", "v", victim, 0.0)
    for index in range(50):
        assert cache.put("flooder", str(index), _kept(100), float(index)) == 1
    assert cache.held("flooder") == 3 * 132  # the whole budget but the victim's pass
    assert cache.take("victim", "v", 50.0) is victim


def test_an_address_within_its_share_takes_room_from_a_borrower() -> None:
    cache = GraphCache(4 * 132, peer_share=0.5)
    for index in range(4):
        cache.put("borrower", str(index), _kept(100), float(index))
    assert cache.put("trainer", "t", _kept(100, 100), 5.0) == 2
    assert cache.held("trainer") == 232 and cache.held("borrower") == 2 * 132
    assert cache.take("borrower", "0", 5.0) is None and cache.take("borrower", "1", 5.0) is None  # its oldest


def test_a_pass_is_cut_to_what_leaves_others_shares_alone() -> None:
    cache = GraphCache(1000, peer_share=0.5)
    cache.put("a", "1", _kept(400), 0.0)  # 432: within a's share of 500
    assert cache.put("b", "2", _kept(200, 200, 200), 1.0) == 2  # 568 may be taken: 32 + 2 x 200
    assert cache.held("a") == 432 and cache.used == 432 + 432


def test_random_traffic_leaves_addresses_within_their_share_alone_and_the_cache_within_budget() -> None:
    rng = random.Random(7)
    peers = ["a", "b", "c"]
    for _ in range(200):
        cache = GraphCache(rng.randint(100, 2000), peer_share=rng.choice([0.3, 0.5, 1.0]))
        for now in range(40):
            peer = rng.choice(peers)
            before = {other: cache.held(other) for other in peers}
            if rng.random() < 0.2:
                cache.take(peer, str(rng.randint(0, now)), float(now))
            else:
                cache.put(peer, str(now), _kept(*[rng.randint(1, 300) for _ in range(rng.randint(1, 3))]), float(now))
            assert cache.used <= cache.max_bytes
            assert cache.used == sum(cache.held(other) for other in peers)
            for other in peers:
                if other != peer and before[other] <= cache.share:  # within its share: untouched by others
                    assert cache.held(other) == before[other]
