"""Smoothed round-trip times to servers (pure: samples and clock values are passed in).

An exponentially weighted moving average per server, as TCP keeps for its RTO: one slow
sample moves the estimate a little, a lasting change moves it within a few samples.
Estimates older than `max_age_s` are due for a new probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RttTracker:
    """Smoothed RTT (seconds) per server id."""

    alpha: float = 0.3
    """Weight of a new sample."""
    max_age_s: float = 60.0
    """An estimate older than this is re-probed."""
    _rtt: dict[str, float] = field(default_factory=dict)
    _updated: dict[str, float] = field(default_factory=dict)

    def observe(self, server_id: str, rtt_s: float, now: float) -> float:
        """Adds a sample; returns the new estimate."""
        if not rtt_s >= 0.0:
            raise ValueError(f"an RTT sample must be >= 0, got {rtt_s}")
        old = self._rtt.get(server_id)
        new = rtt_s if old is None else (1 - self.alpha) * old + self.alpha * rtt_s
        self._rtt[server_id] = new
        self._updated[server_id] = now
        return new

    def get(self, server_id: str) -> float | None:
        return self._rtt.get(server_id)

    def stale(self, server_ids: list[str], now: float) -> list[str]:
        """Those of `server_ids` with no estimate or an old one, unknown ones first."""
        unknown = [s for s in server_ids if s not in self._rtt]
        old = [s for s in server_ids if s in self._rtt and now - self._updated[s] > self.max_age_s]
        return unknown + old

    def snapshot(self) -> dict[str, float]:
        return dict(self._rtt)
