"""When a chunk sent over a simulated link arrives: propagation delay plus a rate cap.

Pure arithmetic on times passed in (no clock, no sockets), so the proxy's timing rules
are tested with data tables. One `LinkShaper` models one direction of one link:

    ready   = when the token bucket lets the chunk onto the wire (its serialisation)
    deliver = ready + one_way_delay

Delays are not serialised: each chunk is scheduled from its own arrival time, so chunks
sent 1 ms apart arrive 1 ms apart, each `one_way_delay` late. Without a rate cap the
bucket is skipped and `deliver = arrival + one_way_delay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """A token bucket that may go into debt: a chunk larger than the tokens at hand is
    let through at the time the missing tokens will have accrued, and later chunks wait
    behind that debt. So throughput never exceeds `rate` beyond a `burst` head start."""

    rate: float
    """Tokens (bytes) added per second; > 0."""
    burst: float
    """Most tokens the bucket holds, i.e. the largest burst let through at once; > 0."""
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError(f"rate and burst must be positive, got {self.rate}, {self.burst}")
        self.tokens = self.burst

    def reserve(self, nbytes: int, now: float) -> float:
        """Takes `nbytes` tokens; returns the time (>= now) the chunk may be sent."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        ready = now if self.tokens >= nbytes else now + (nbytes - self.tokens) / self.rate
        self.tokens -= nbytes
        return ready


class LinkShaper:
    """Delivery times for the chunks of one direction of a simulated link."""

    def __init__(
        self, one_way_delay_s: float, rate_bytes_per_s: float | None = None, burst_bytes: float | None = None
    ) -> None:
        if one_way_delay_s < 0:
            raise ValueError(f"one_way_delay_s must be >= 0, got {one_way_delay_s}")
        self.one_way_delay_s = one_way_delay_s
        self._bucket: TokenBucket | None = None
        if rate_bytes_per_s is not None:
            # Default burst: 5 ms worth of bytes (at least one chunk), small enough that
            # a measured transfer of a few hundred ms follows the rate within a few %.
            burst = burst_bytes if burst_bytes is not None else max(rate_bytes_per_s * 0.005, 1500.0)
            self._bucket = TokenBucket(rate_bytes_per_s, burst)

    @property
    def rate_bytes_per_s(self) -> float | None:
        return self._bucket.rate if self._bucket is not None else None

    def max_chunk(self, default: int) -> int:
        """Largest chunk to schedule as one piece: with a rate cap, pieces of ~2 ms of
        transmission, so a big read does not arrive as one lump long after its start."""
        if self._bucket is None:
            return default
        return max(1024, min(default, int(self._bucket.rate * 0.002)))

    def delivery_time(self, nbytes: int, arrival: float) -> float:
        """When a chunk of `nbytes` that reached the link at `arrival` comes out the far end."""
        ready = arrival if self._bucket is None else self._bucket.reserve(nbytes, arrival)
        return ready + self.one_way_delay_s
