"""Deadlines for writes on long-lived gRPC streams, without a timer per write.

A write on an open stream normally ends within a turn of the event loop: the message goes
to the transport's buffers. Only a peer that stops reading (HTTP/2 flow control) or a
connection that is not up yet makes it wait, and then the writer must give up after a
while: a server must not let a stalled next hop hold its session, nor a client a stalled
first server. An `asyncio.timeout` scope around each write arms and cancels a timer per
message, ~50 us with the cold caches of a hop's critical path (a push leaves right after
the compute, a client's step right before the first server can start). A `WriteWatch`
instead notes the writes in flight in a dict; one task per watch, waking every
`timeout / 4`, cancels the writing task of any write older than `timeout`, and the write
raises `WriteTimedOut` (a `TimeoutError`, as the timeout scope raised; the cancellation is
taken back as asyncio.timeout does, so a task cancelled by someone else stays cancelled).
Cancelling the call instead would not do: a write of a large message stuck in flow
control waits for gRPC's core to give up on it (seconds). A write times out after
`timeout` to 1.25 x `timeout`; grpc.aio cancels its call (it cannot be used again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any


class WriteTimedOut(TimeoutError):
    """A write did not end within the watch's timeout; its call was cancelled."""


class WriteWatch:
    """Times out writes on grpc.aio calls; bound to the event loop of its first write."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout <= 0:
            raise ValueError(f"a write timeout must be positive, got {timeout}")
        self.timeout = timeout
        self._clock = clock
        self._writes: dict[int, tuple[asyncio.Task[Any], float]] = {}
        """Writes in flight: id(call) -> (writing task, start); grpc.aio writes one message at a time per call."""
        self._expired: set[int] = set()
        self._started = 0
        """Writes started so far."""
        self._task: asyncio.Task[None] | None = None

    async def write(self, call: Any, message: Any) -> None:
        """`await call.write(message)`; WriteTimedOut if it has not ended within the timeout."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("WriteWatch.write must run in a task")
        key = id(call)
        self._writes[key] = (task, self._clock())
        self._started += 1
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # (the first write, or the first after a quiet spell; owned: close() cancels it)
            self._task = loop.create_task(self._watch(), name="write-watch")
        try:
            await call.write(message)
        except asyncio.CancelledError:
            # (the watch only cancels a writer suspended in this await, so an expired write
            # always ends here: a writer already due to resume gets the CancelledError instead)
            if key in self._expired:
                self._expired.discard(key)
                if task.uncancel() == 0:  # the watch's cancellation alone, as asyncio.timeout tells
                    raise WriteTimedOut(f"a write did not end within {self.timeout:g} s") from None
            raise
        finally:
            self._writes.pop(key, None)

    @property
    def in_flight(self) -> int:
        return len(self._writes)

    def expire_overdue(self) -> int:
        """Cancels the writing tasks of writes older than the timeout; returns how many."""
        now = self._clock()
        overdue = [(key, task) for key, (task, start) in self._writes.items()
                   if key not in self._expired and now - start >= self.timeout]
        for key, task in overdue:
            self._expired.add(key)
            task.cancel()
        return len(overdue)

    async def _watch(self) -> None:
        # ends after a quiet spell (no write started, none in flight; the next write starts
        # it again): a watch left behind by a stream nobody closes holds no task, and a
        # busy one is not restarted at every write
        seen = -1
        while self._writes or self._started != seen:
            seen = self._started
            await asyncio.sleep(self.timeout / 4)
            self.expire_overdue()

    async def close(self) -> None:
        """Stops watching (writes still in flight are no longer timed out)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class WriteWatches:
    """One `WriteWatch` per timeout, for callers whose writes come with their own timeout."""

    def __init__(self) -> None:
        self._watches: dict[float, WriteWatch] = {}

    def watch(self, timeout: float) -> WriteWatch:
        watch = self._watches.get(timeout)
        if watch is None:
            watch = self._watches[timeout] = WriteWatch(timeout)
        return watch

    async def close(self) -> None:
        for watch in self._watches.values():
            await watch.close()
