"""Pure accounting of what clients may hold: per-peer shares, idle victims, checks of ids and hops."""

from __future__ import annotations

import math

import pytest
import torch

from node.limits import HeldSession, ShareLedger, cache_victims, peer_of
from node.validation import NonFiniteOutput, check_finite, check_finite_output, check_next_hops, is_random_id
from swarm.errors import InvalidInput
from swarm.protocol import NextHop


@pytest.mark.parametrize("grpc_peer, peer", [
    ("ipv4:127.0.0.1:53422", "127.0.0.1"),
    ("ipv4:10.1.2.3:1", "10.1.2.3"),
    ("ipv6:[::1]:40000", "::1"),
    ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
    ("unix:/tmp/sock", "unix:/tmp/sock"),
])
def test_peer_is_the_address_without_the_port(grpc_peer: str, peer: str) -> None:
    assert peer_of(grpc_peer) == peer


# (held by a, held by b, total, per peer, peer asking, amount, refused?)
LEDGER_CASES = [
    ({}, 100, 50, "a", 50, False),
    ({}, 100, 50, "a", 51, True),            # over the peer's share on an empty server
    ({"a": 40}, 100, 50, "a", 20, True),      # the peer's own holdings count
    ({"a": 40}, 100, 50, "b", 50, False),     # another peer is not charged for a's
    ({"a": 50, "b": 40}, 100, 50, "c", 20, True),  # server-wide cap
    ({"a": 50, "b": 40}, 100, 50, "c", 10, False),
]


@pytest.mark.parametrize("held, total, per_peer, peer, amount, refused", LEDGER_CASES)
def test_share_ledger(held: dict[str, int], total: int, per_peer: int, peer: str, amount: int,
                      refused: bool) -> None:
    ledger = ShareLedger(total, per_peer)
    for who, tokens in held.items():
        assert ledger.try_take(who, tokens)
    assert (ledger.refusal(peer, amount) is not None) == refused
    assert ledger.try_take(peer, amount) is not refused
    if not refused:
        ledger.release(peer, amount)
    assert ledger.used == sum(held.values()) and ledger.by_peer == {k: v for k, v in held.items() if v}


def test_share_ledger_rejects_bad_releases() -> None:
    ledger = ShareLedger(10, 10)
    assert ledger.try_take("a", 5)
    with pytest.raises(ValueError):
        ledger.release("a", 6)
    with pytest.raises(ValueError):
        ledger.release("b", 1)
    ledger.release("a", 5)
    assert ledger.by_peer == {} and ledger.free == 10
    assert not ledger.fits_ever(11) and ledger.fits_ever(10)


def _held(key: int, peer: str, tokens: int, idle_since: float) -> HeldSession:
    return HeldSession(key, peer, tokens, idle_since)


# sessions held (key, peer, tokens, idle since); at now=100, min idle 5, share 50 of 100; who asks
# (and how much); expected victims
VICTIM_CASES = [
    ("room left: nobody is closed", [(1, "a", 40, 0.0)], "b", 50, []),
    ("the longest idle goes first", [(1, "a", 50, 90.0), (2, "c", 50, 80.0)], "b", 50, [2]),
    ("busy and recently active sessions within their share stay",
     [(1, "a", 50, math.inf), (2, "c", 50, 97.0)], "b", 50, []),
    ("none closed unless it makes room", [(1, "a", 30, 0.0), (2, "b", 50, math.inf), (3, "d", 20, math.inf)],
     "c", 50, []),
    ("several small ones", [(1, "a", 25, 10.0), (2, "a", 25, 20.0), (3, "b", 50, math.inf)], "c", 50, [1, 2]),
    ("a lone peer fills the server; its idle session gives way to itself", [(1, "a", 100, 90.0)], "a", 10, [1]),
    ("borrowed room goes back to a fair asker though its holder stepped just now",
     [(1, "a", 40, 99.0), (2, "a", 60, 99.5)], "b", 50, [1, 2]),
    ("stale sessions go before borrowed room", [(1, "a", 80, 99.0), (2, "c", 20, 10.0)], "b", 20, [2]),
    ("a borrower loses its longest idle session first", [(1, "a", 50, 98.0), (2, "a", 25, 99.0), (3, "c", 25, math.inf)],
     "b", 25, [1]),
    ("a computing borrower is not interrupted", [(1, "a", 100, math.inf)], "b", 10, []),
    ("an asker beyond its own share cannot take borrowed room",
     [(1, "a", 60, 99.0), (2, "b", 40, math.inf)], "b", 20, []),
]


@pytest.mark.parametrize("held, peer, tokens, victims", [c[1:] for c in VICTIM_CASES], ids=[c[0] for c in VICTIM_CASES])
def test_cache_victims(held: list[tuple[int, str, int, float]], peer: str, tokens: int, victims: list[int]) -> None:
    ledger = ShareLedger(100, 100)
    sessions = [_held(*row) for row in held]
    for session in sessions:
        assert ledger.try_take(session.peer, session.tokens)
    chosen = cache_victims(ledger, sessions, peer, tokens, now=100.0, min_idle=5.0, share=50)
    assert chosen == victims
    if chosen:  # closing them makes the request fit
        for session in sessions:
            if session.key in chosen:
                ledger.release(session.peer, session.tokens)
        assert ledger.refusal(peer, tokens) is None


@pytest.mark.parametrize("text, ok", [
    ("0123456789abcdef0123456789abcdef", True),
    ("0123456789ABCDEF0123456789abcdef", False),
    ("abc", False),
    ("", False),
    ("0123456789abcdef0123456789abcdef0", False),
    ("0123456789abcdef-123456789abcdef", False),
])
def test_random_ids(text: str, ok: bool) -> None:
    assert is_random_id(text) is ok


OWN = frozenset({"10.0.0.5:7000"})


@pytest.mark.parametrize("addresses, refused", [
    (["10.0.0.6:7000"], None),
    (["10.0.0.6:7000"] * 8, None),
    (["10.0.0.6:7000"] * 9, "at most 8"),
    (["10.0.0.5:7000"], "this server itself"),
    (["127.0.0.1:7000"], "this server itself"),
    (["localhost:7000"], "this server itself"),
    (["127.0.0.1:7001"], None),
])
def test_next_hops(addresses: list[str], refused: str | None) -> None:
    hops = tuple(NextHop(a, "0" * 32, "1" * 32) for a in addresses)
    if refused is None:
        check_next_hops(hops, OWN)
    else:
        with pytest.raises(InvalidInput, match=refused):
            check_next_hops(hops, OWN)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused_in_and_withheld_out(value: float) -> None:
    tensor = torch.zeros(1, 3, 4)
    check_finite(tensor, "hidden states")
    check_finite_output(tensor)
    tensor[0, 1, 2] = value
    with pytest.raises(InvalidInput, match="hidden states hold NaN or Inf"):
        check_finite(tensor, "hidden states")
    with pytest.raises(NonFiniteOutput):
        check_finite_output(tensor)
