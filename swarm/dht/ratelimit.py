"""Token buckets, one per source: how often a peer may make us do work.

Pure: the caller passes the clock reading (`now`, seconds on any monotonic clock) in.

A bucket holds up to `burst` tokens and gains `rate` tokens a second; an action that
costs one token is allowed when a token is there. `SourceLimits` keeps one bucket per
source (the DHT uses a datagram's (ip, port)) and at most `max_sources` of them, so an
attacker cycling source ports costs bounded memory and O(1) time per action: when the
map is full, the least recently used bucket is dropped (its source, if it comes back,
starts with a full bucket: a forgotten source is treated as a new one).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket's shape."""

    rate: float
    """Tokens gained per second (sustained actions per second)."""
    burst: float
    """Most tokens held (actions allowed at once after a quiet spell)."""


@dataclass
class TokenBucket:
    """One bucket; starts full."""

    limit: RateLimit
    tokens: float
    updated: float

    @classmethod
    def full(cls, limit: RateLimit, now: float) -> TokenBucket:
        return cls(limit, limit.burst, now)

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)  # a clock that goes back refills nothing
        self.tokens = min(self.limit.burst, self.tokens + elapsed * self.limit.rate)
        self.updated = max(self.updated, now)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spends `cost` tokens if there are that many; True if the action may go ahead."""
        self.refill(now)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def is_full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.limit.burst


class SourceLimits(Generic[K]):
    """One token bucket per source, at most `max_sources` remembered (module docstring)."""

    def __init__(self, limit: RateLimit, max_sources: int = 4096) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        self.limit = limit
        self.max_sources = max_sources
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: K, now: float, cost: float = 1.0) -> bool:
        """True if `source` may do an action costing `cost` tokens now (and spends them)."""
        bucket = self._buckets.get(source)
        if bucket is None:
            self._make_room()
            bucket = self._buckets[source] = TokenBucket.full(self.limit, now)
        else:
            self._buckets.move_to_end(source)
        return bucket.take(now, cost)

    def _make_room(self) -> None:
        while len(self._buckets) >= self.max_sources:
            self._buckets.popitem(last=False)
