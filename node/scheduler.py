"""The node's compute thread: one worker, inference steps ahead of batch work, no starvation.

All torch work of a node runs on one thread (see node/backend.py). Inference steps are
short and latency-bound: someone is waiting for each token. Forward and Backward calls
of training clients are long and throughput-bound. With one first-in-first-out queue a
generating client waits behind a whole training pass for every token. Here batch passes
are queued a piece (one block) at a time and the two kinds of work share the thread by
`FairShare`: a step waits for the piece that is running (and for pieces batch work is
owed), never for a whole pass, and batch work still gets at least its share of the
thread's time when inference steps keep it busy. Within one kind, the client addresses
that have work waiting share the thread by measured time too (`PeerQueue`): one client's
back-to-back passes cannot make another client's pass wait for all of them. One client's
tasks run in the order they came.

A short task may run on its caller's thread (the event loop) instead (`run(inline=True)`,
for decode-sized inference steps): only when the worker is idle and nothing waits, i.e.
exactly when the worker would pick it at once; it holds the worker's slot while it runs
(the worker starts nothing meanwhile) and is charged like any task, so the order and the
shares are the same. It saves the two thread hand-offs of a queued task (caller -> worker
-> caller: ~0.3 ms per step on a busy 2-core machine, a large part of a decode hop). Once
such a task took longer than `inline_limit`, they go to the worker: a long step must not
hold the event loop (other sessions' messages, health checks).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_BATCH_SHARE = 0.2
"""Batch work's least share of a busy compute thread: inference steps slow by at most 1/(1 - 0.2) = 1.25x."""

DEFAULT_INLINE_LIMIT = 0.05
"""Seconds an inline-eligible task may have taken (the last one) for the next to run inline:
SmolLM2's 10-block decode step takes ~10 ms on 2 CPU cores, a GPU step a few ms."""


class Priority(enum.IntEnum):
    """The kinds of work; on a tie the lower value runs first."""

    INFERENCE = 0
    BATCH = 1


class Scheduling(enum.Enum):
    PRIORITY = "priority"
    """Inference steps first, batch work in pieces with its least share (the default)."""
    FIFO = "fifo"
    """Arrival order, a whole Forward/Backward pass as one task: the plain single queue,
    kept for comparison (`scripts/bench mixed`)."""


class FairShare:
    """Which kind of work runs next: weighted fair sharing of one thread by measured time.

    Each kind has a virtual clock that advances by its tasks' run time divided by its
    weight; the waiting kind with the earliest clock runs next. A kind that had nothing
    waiting catches up to the others' clocks when work arrives, so idling earns no credit.
    With batch share s, while both kinds keep work waiting, batch work gets s of the time
    and inference 1 - s; s = 0 is strict priority (batch work only runs when no step waits).
    Pure bookkeeping: the caller measures and reports run times.
    """

    def __init__(self, batch_share: float = DEFAULT_BATCH_SHARE) -> None:
        if not 0.0 <= batch_share < 1.0:
            raise ValueError(f"batch share must be in [0, 1), got {batch_share}")
        self.weights = {Priority.INFERENCE: 1.0 - batch_share, Priority.BATCH: batch_share}
        self.clocks = {kind: 0.0 for kind in Priority}
        self._floor = 0.0
        """The clock of the kind picked last: where a kind that wakes up starts."""

    def wake(self, kind: Priority) -> None:
        """`kind` had nothing waiting or running and now has work."""
        self.clocks[kind] = max(self.clocks[kind], self._floor)

    def pick(self, waiting: set[Priority]) -> Priority:
        if not waiting:
            raise ValueError("nothing waits")
        strict = [kind for kind in waiting if self.weights[kind] == 0.0]
        if strict and len(strict) < len(waiting):  # a zero share runs only when nothing else waits
            waiting = waiting - set(strict)
        kind = min(waiting, key=lambda k: (self.clocks[k], k))
        self._floor = max(self._floor, self.clocks[kind])
        return kind

    def charge(self, kind: Priority, seconds: float) -> None:
        weight = self.weights[kind]
        if weight > 0.0:
            self.clocks[kind] += seconds / weight


_Task = tuple[concurrent.futures.Future[Any], Callable[[], Any]]


class PeerQueue:
    """One kind's waiting tasks, by client address; the address with the least run time goes first.

    Each address has a clock of its tasks' run time; an address that had nothing waiting
    starts at the least clock of those waiting (idling earns no credit). FIFO within an
    address. Pure bookkeeping: the caller reports run times (`charge`).
    """

    def __init__(self) -> None:
        self._tasks: dict[str, collections.deque[_Task]] = {}
        self.clocks: dict[str, float] = {}

    def __len__(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    def __iter__(self) -> Iterator[_Task]:
        return (task for tasks in self._tasks.values() for task in tasks)

    def append(self, peer: str, task: _Task) -> None:
        if peer not in self._tasks:
            floor = min((self.clocks[p] for p in self._tasks), default=0.0)
            self.clocks[peer] = max(self.clocks.get(peer, 0.0), floor)
            self._tasks[peer] = collections.deque()
        self._tasks[peer].append(task)

    def popleft(self) -> tuple[str, _Task]:
        peer = min(self._tasks, key=self.clocks.__getitem__)  # dicts keep arrival order for ties
        tasks = self._tasks[peer]
        task = tasks.popleft()
        if not tasks:
            del self._tasks[peer]
        return peer, task

    def charge(self, peer: str, seconds: float) -> None:
        self.clocks[peer] = self.clocks.get(peer, 0.0) + seconds
        if len(self.clocks) > 4 * len(self._tasks) + 64:  # forget addresses with nothing waiting
            self.clocks = {p: c for p, c in self.clocks.items() if p in self._tasks}

    def clear(self) -> None:
        self._tasks.clear()


class PriorityExecutor:
    """A single worker thread that runs submitted callables: by `FairShare` between kinds, FIFO within."""

    def __init__(self, name: str = "torch", scheduling: Scheduling = Scheduling.PRIORITY,
                 batch_share: float = DEFAULT_BATCH_SHARE,
                 clock: Callable[[], float] = time.perf_counter,
                 inline_limit: float = DEFAULT_INLINE_LIMIT) -> None:
        self.scheduling = scheduling
        self.inline_limit = inline_limit
        self._last_inline_eligible = 0.0
        """Run time of the last task submitted with inline=True (wherever it ran)."""
        self.inline_runs = 0
        """Tasks run on their caller's thread so far."""
        self.share = FairShare(batch_share)
        self._clock = clock
        self._queues: dict[Priority, PeerQueue] = {kind: PeerQueue() for kind in Priority}
        self._running: Priority | None = None
        self._active = {kind: 0 for kind in Priority}
        """Passes of each kind under way (see `active`)."""
        self.busy_seconds = {kind: 0.0 for kind in Priority}
        """Run time of each kind's tasks so far (fifo: all under INFERENCE)."""
        self._wakeup = threading.Condition()
        self._closed = False
        # daemon: a node that is shutting down must not wait for a long pass to finish
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _kind(self, priority: Priority) -> Priority:
        return priority if self.scheduling is Scheduling.PRIORITY else Priority.INFERENCE  # fifo: one queue

    def _idle(self, kind: Priority) -> bool:
        return not self._queues[kind] and self._running is not kind and not self._active[kind]

    @contextlib.contextmanager
    def active(self, priority: Priority) -> Iterator[None]:
        """A pass of several tasks is under way: between its tasks its kind is not idle.

        Without this, a pass whose next piece arrives just after a step was picked would
        count as newly woken each time and lose the share it has not had yet.
        """
        kind = self._kind(priority)
        with self._wakeup:
            if self._idle(kind):
                self.share.wake(kind)
            self._active[kind] += 1
        try:
            yield
        finally:
            with self._wakeup:
                self._active[kind] -= 1

    def submit(self, priority: Priority, fn: Callable[..., T], *args: Any, peer: str = ""
               ) -> concurrent.futures.Future[T]:
        """Queues `fn(*args)` for client address `peer` (its share within the kind)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        kind = self._kind(priority)
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the compute thread is shut down")
            if self._idle(kind):
                self.share.wake(kind)
            self._queues[kind].append(peer, (future, functools.partial(fn, *args)))
            self._wakeup.notify()
        return future

    async def run(self, priority: Priority, fn: Callable[..., T], *args: Any, peer: str = "",
                  inline: bool = False) -> T:
        """Runs `fn(*args)` on the worker; cancelling the await drops it if it has not started.

        `inline`: a short task that may run right here when the worker is idle and nothing
        waits (see the module docstring); elsewise it is queued like any other.
        """
        if not inline:
            return await asyncio.wrap_future(self.submit(priority, fn, *args, peer=peer))
        call = functools.partial(self._timed, fn, *args)
        kind = self._kind(priority)
        if self._last_inline_eligible <= self.inline_limit and self._claim(kind):
            return self._run_claimed(kind, peer, call)
        return await asyncio.wrap_future(self.submit(priority, call, peer=peer))

    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        began = self._clock()
        try:
            return fn(*args)
        finally:
            self._last_inline_eligible = self._clock() - began

    def _claim(self, kind: Priority) -> bool:
        """Takes the worker's slot for a task of `kind` if the worker would run it at once."""
        with self._wakeup:
            if self._closed or self._running is not None or any(self._queues.values()):
                return False
            if self._idle(kind):
                self.share.wake(kind)
            self.share.pick({kind})
            self._running = kind
            return True

    def _run_claimed(self, kind: Priority, peer: str, call: Callable[[], T]) -> T:
        """Runs `call` on this thread in the slot `_claim` took, then charges it and frees the slot."""
        began = self._clock()
        try:
            return call()
        finally:
            self._charge(kind, peer, self._clock() - began)
            self.inline_runs += 1

    @property
    def queued(self) -> int:
        """Tasks waiting (not counting the one running)."""
        with self._wakeup:
            return sum(len(queue) for queue in self._queues.values())

    def shutdown(self) -> None:
        """Cancels every queued task; the running one finishes on its own."""
        with self._wakeup:
            self._closed = True
            dropped = [task for queue in self._queues.values() for task in queue]
            for queue in self._queues.values():
                queue.clear()
            self._wakeup.notify()
        for future, _ in dropped:
            future.cancel()

    def _next(self) -> tuple[Priority, str, _Task] | None:
        with self._wakeup:
            while True:
                waiting = {kind for kind, queue in self._queues.items() if queue}
                if waiting and self._running is None:  # else a task runs inline: wait for it
                    kind = self.share.pick(waiting)
                    self._running = kind
                    return kind, *self._queues[kind].popleft()
                if self._closed:
                    return None
                self._wakeup.wait()

    def _work(self) -> None:
        while (picked := self._next()) is not None:
            kind, peer, (future, call) = picked
            if future.set_running_or_notify_cancel():  # else its caller gave up while it waited
                began = self._clock()
                try:
                    result = call()
                except BaseException as error:  # handed to the caller, who decides
                    future.set_exception(error)
                else:
                    future.set_result(result)
                seconds = self._clock() - began
            else:
                seconds = 0.0
            self._charge(kind, peer, seconds)

    def _charge(self, kind: Priority, peer: str, seconds: float) -> None:
        """A task of `kind` for `peer` ran `seconds`: its share and its address pay, the slot is free."""
        with self._wakeup:
            self.busy_seconds[kind] += seconds
            self.share.charge(kind, seconds)
            self._queues[kind].charge(peer, seconds)
            self._running = None
            if any(self._queues.values()):
                # only queued work needs the worker now: waking it after every inline step
                # cost a thread switch and a GIL hand-off on each hop's critical path
                self._wakeup.notify()
