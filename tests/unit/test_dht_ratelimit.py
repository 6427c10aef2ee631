"""Token buckets per source (pure tables; the clock is passed in) and the datagram seal."""

from __future__ import annotations

import pytest

from swarm.dht.ratelimit import RateLimit, SourceLimits, TokenBucket
from swarm.dht.seal import MAC_BYTES, DatagramSeal

BUCKET_TABLE = [
    # (rate, burst, [(time, cost)], allowed)
    (1.0, 2.0, [(0, 1), (0, 1), (0, 1)], [True, True, False]),  # the burst, then nothing
    (1.0, 2.0, [(0, 1), (0, 1), (0.5, 1), (1.0, 1)], [True, True, False, True]),  # one a second
    (1.0, 2.0, [(0, 1), (0, 1), (100, 1), (100, 1), (100, 1)], [True, True, True, True, False]),  # capped
    (10.0, 5.0, [(0, 5), (0.1, 1), (0.2, 2)], [True, True, False]),  # costs
    (1.0, 1.0, [(5, 1), (4, 1), (5.5, 1), (6, 1)], [True, False, False, True]),  # clock going back
    (0.0, 3.0, [(0, 1), (1e6, 1), (2e6, 1), (3e6, 1)], [True, True, True, False]),  # no refill
]


@pytest.mark.parametrize(("rate", "burst", "actions", "allowed"), BUCKET_TABLE)
def test_token_bucket(rate: float, burst: float, actions: list[tuple[float, float]], allowed: list[bool]) -> None:
    bucket = TokenBucket.full(RateLimit(rate, burst), actions[0][0])
    assert [bucket.take(now, cost) for now, cost in actions] == allowed


def test_sources_have_their_own_buckets() -> None:
    limits: SourceLimits[tuple[str, int]] = SourceLimits(RateLimit(1.0, 2.0))
    a, b = ("10.0.0.1", 1), ("10.0.0.1", 2)
    assert [limits.allow(a, 0.0) for _ in range(3)] == [True, True, False]
    assert [limits.allow(b, 0.0) for _ in range(3)] == [True, True, False]
    assert limits.allow(a, 1.0) and not limits.allow(a, 1.0)


def test_sources_are_bounded_least_recently_used_first() -> None:
    limits: SourceLimits[int] = SourceLimits(RateLimit(0.0, 1.0), max_sources=3)
    for source in range(3):
        assert limits.allow(source, 0.0)
    assert not limits.allow(0, 0.0)  # 0 is now the most recently used
    assert limits.allow(3, 0.0)  # forgets 1
    assert len(limits) == 3
    assert not limits.allow(0, 0.0) and not limits.allow(2, 0.0)  # still remembered, spent
    assert limits.allow(1, 0.0)  # forgotten: starts with a full bucket again
    with pytest.raises(ValueError):
        SourceLimits(RateLimit(1.0, 1.0), max_sources=0)


def test_seal_round_trip_and_rejections() -> None:
    seal, other = DatagramSeal("s3cret"), DatagramSeal("other")
    sealed = seal.seal(b"\x00hello")
    assert len(sealed) == 6 + MAC_BYTES and seal.open(sealed) == b"\x00hello"
    assert other.open(sealed) is None  # another swarm's token
    assert seal.open(b"\x00hello") is None  # no MAC at all
    assert seal.open(b"short") is None
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    assert seal.open(flipped) is None  # one bit changed
    assert seal.open(sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert seal.open(seal.seal(b"")) == b""
    with pytest.raises(ValueError):
        DatagramSeal("")
