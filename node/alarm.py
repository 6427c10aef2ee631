"""A per-session deadline that costs a step one float store, not a timer.

A session waits for its next step with two deadlines: the idle timeout that closes it and,
while it holds copies for `defer_copy`, the moment to send them anyway. A fresh
`asyncio.timeout` around every wait arms and cancels a timer each step; with the caches
cold after a step's compute that took ~60 us on every hop of every token. `Alarm` keeps
one timer: a step only moves the deadline, and a timer that fires early re-arms itself
for the deadline as it now is. When the deadline has passed, the alarm puts a marker in
the session's inbox, once, behind whatever is already there; whoever takes the marker
asks `passed()`, since a step may have moved the deadline on while the marker waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Generic, TypeVar

T = TypeVar("T")

_SLACK = 0.002
"""Timers on a millisecond clock (uvloop's) may fire a little before their deadline: that
counts as on time, rather than re-arming for the last fraction of a millisecond."""


class Alarm(Generic[T]):
    """Puts `marker` into `inbox` once the deadline set last has passed."""

    def __init__(self, inbox: asyncio.Queue[T], marker: T) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox = inbox
        self._marker = marker
        self.deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None

    def set(self, seconds: float) -> None:
        """The deadline is `seconds` from now (replacing the one before)."""
        self.deadline = self._loop.time() + seconds
        if self._timer is not None and self._timer.when() <= self.deadline:
            return  # it fires no later than needed and then looks again
        self.cancel()
        self._timer = self._loop.call_at(self.deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self.passed():  # moved on since this timer was set
            self._timer = self._loop.call_at(self.deadline, self._fire)
            return
        with contextlib.suppress(asyncio.QueueFull):  # a full inbox is not idle
            self._inbox.put_nowait(self._marker)

    def passed(self) -> bool:
        """Whether the deadline set last has passed. A marker taken from the inbox when it has
        not is stale: it was put there before a step came and moved the deadline on."""
        return self._loop.time() >= self.deadline - _SLACK

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
