"""The node's compute thread: one worker, inference steps ahead of batch work.

All torch work of a node runs on one thread (see node/backend.py). Inference steps are
short and latency-bound: someone is waiting for each token. Forward and Backward calls
of training clients are long and throughput-bound. With one first-in-first-out queue a
generating client would wait behind a whole training pass for every token; here batch
passes are queued a piece (one block) at a time, and a queued inference step always runs
before queued batch pieces, so a step waits at most for the piece that is running.
Within one priority, tasks run in the order they came.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import functools
import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Priority(enum.IntEnum):
    """Lower runs first."""

    INFERENCE = 0
    BATCH = 1


class Scheduling(enum.Enum):
    PRIORITY = "priority"
    """Inference steps first (the default)."""
    FIFO = "fifo"
    """Arrival order, a whole Forward/Backward pass as one task: the plain single queue,
    kept for comparison (`scripts/bench mixed`)."""


_Entry = tuple[int, int, concurrent.futures.Future[Any], Callable[[], Any]]


class PriorityExecutor:
    """A single worker thread that runs submitted callables by (priority, arrival)."""

    def __init__(self, name: str = "torch", scheduling: Scheduling = Scheduling.PRIORITY) -> None:
        self.scheduling = scheduling
        self._queue: list[_Entry] = []
        self._arrivals = itertools.count()
        self._wakeup = threading.Condition()
        self._closed = False
        # daemon: a node that is shutting down must not wait for a long pass to finish
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: Priority, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        rank = int(priority) if self.scheduling is Scheduling.PRIORITY else 0
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the compute thread is shut down")
            entry: _Entry = (rank, next(self._arrivals), future, functools.partial(fn, *args))
            heapq.heappush(self._queue, entry)
            self._wakeup.notify()
        return future

    async def run(self, priority: Priority, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(*args)` on the worker; cancelling the await drops it if it has not started."""
        return await asyncio.wrap_future(self.submit(priority, fn, *args))

    @property
    def queued(self) -> int:
        """Tasks waiting (not counting the one running)."""
        with self._wakeup:
            return len(self._queue)

    def shutdown(self) -> None:
        """Cancels every queued task; the running one finishes on its own."""
        with self._wakeup:
            self._closed = True
            dropped, self._queue = self._queue, []
            self._wakeup.notify()
        for _, _, future, _ in dropped:
            future.cancel()

    def _work(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._closed:
                    self._wakeup.wait()
                if not self._queue:
                    return
                _, _, future, call = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up while it waited
            try:
                result = call()
            except BaseException as error:  # handed to the caller, who decides
                future.set_exception(error)
            else:
                future.set_result(result)
