"""The compute thread's queue: inference steps first, batch work its share, arrival order within a kind."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable

import pytest

from node.scheduler import FairShare, Priority, PriorityExecutor, Scheduling

INF, BATCH = Priority.INFERENCE, Priority.BATCH


def _gated(executor: PriorityExecutor) -> tuple[threading.Event, concurrent.futures.Future[None]]:
    """Occupies the worker until the returned event is set (so that a queue builds up)."""
    gate, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(10)

    busy = executor.submit(BATCH, hold)
    assert started.wait(10)
    return gate, busy


def _queue_mixed(executor: PriorityExecutor, ran: list[str]) -> list[concurrent.futures.Future[None]]:
    return [executor.submit(priority, ran.append, name) for name, priority in
            (("batch-1", BATCH), ("step-1", INF), ("batch-2", BATCH), ("step-2", INF))]


@pytest.mark.parametrize(("scheduling", "expected"), [
    (Scheduling.PRIORITY, ["step-1", "step-2", "batch-1", "batch-2"]),
    (Scheduling.FIFO, ["batch-1", "step-1", "batch-2", "step-2"]),
])
def test_strict_priority_and_fifo_orders(scheduling: Scheduling, expected: list[str]) -> None:
    executor = PriorityExecutor("test", scheduling, batch_share=0.0)
    try:
        gate, busy = _gated(executor)
        ran: list[str] = []
        futures = _queue_mixed(executor, ran)
        assert executor.queued == 4
        gate.set()
        concurrent.futures.wait([busy, *futures], timeout=10)
        assert ran == expected
    finally:
        executor.shutdown()


def _costing(now: list[float], ran: list[str], name: str, cost: float) -> Callable[[], None]:
    def task() -> None:
        ran.append(name)
        now[0] += cost  # the executor's clock: this task "took" `cost` seconds

    return task


def test_batch_work_gets_its_share_of_a_busy_thread() -> None:
    now = [0.0]
    executor = PriorityExecutor("test", batch_share=0.25, clock=lambda: now[0])
    try:
        gate, busy = _gated(executor)
        ran: list[str] = []
        futures = [executor.submit(kind, _costing(now, ran, kind.name, 1.0))
                   for kind in [BATCH] * 20 + [INF] * 20]
        gate.set()
        concurrent.futures.wait([busy, *futures], timeout=10)
    finally:
        executor.shutdown()
    # weights 3 : 1 with equal costs: a batch task after every three steps (ties go to steps)
    assert [i for i, name in enumerate(ran[:16]) if name == "BATCH"] == [1, 5, 9, 13]
    assert ran.count("BATCH") == 20


class _RecordingShare(FairShare):
    def __init__(self, batch_share: float) -> None:
        super().__init__(batch_share)
        self.woken: list[Priority] = []

    def wake(self, kind: Priority) -> None:
        self.woken.append(kind)
        super().wake(kind)


def test_a_pass_between_its_pieces_is_not_woken_again() -> None:
    executor = PriorityExecutor("test")
    share = executor.share = _RecordingShare(0.2)
    try:
        with executor.active(BATCH):
            for _ in range(3):  # one piece at a time: the queue is empty between them
                executor.submit(BATCH, len, "piece").result(10)
        assert share.woken == [BATCH]  # once, when the pass began: it keeps the share it is owed
        executor.submit(INF, len, "step").result(10)
        assert share.woken == [BATCH, INF]
    finally:
        executor.shutdown()


def test_fair_share_by_time_not_by_task_count() -> None:
    share = FairShare(0.5)
    share.wake(INF)
    share.wake(BATCH)
    order = []
    for _ in range(8):  # steps of 1 s, batch pieces of 3 s, equal weights
        kind = share.pick({INF, BATCH})
        share.charge(kind, 1.0 if kind is INF else 3.0)
        order.append(kind)
    assert order.count(INF) == 6 and order.count(BATCH) == 2  # 6 s each


def test_idling_earns_no_credit() -> None:
    share = FairShare(0.2)
    share.wake(BATCH)
    for _ in range(10):  # batch work alone for a while
        assert share.pick({BATCH}) is BATCH
        share.charge(BATCH, 1.0)
    share.wake(INF)
    picks = [share.pick({INF, BATCH}) for _ in range(1)]
    assert picks == [INF]  # the newcomer starts level with the others' clock, then shares
    share.charge(INF, 1.0)
    assert share.clocks[INF] == pytest.approx(share.clocks[BATCH] - 5.0 + 1.25)
    # and a steady stream of steps after that does not keep batch work out for the 50 s it ran alone
    kinds = []
    for _ in range(20):
        kind = share.pick({INF, BATCH})
        share.charge(kind, 1.0)
        kinds.append(kind)
    assert BATCH in kinds[:5]


def test_zero_share_is_strict_priority() -> None:
    share = FairShare(0.0)
    share.wake(BATCH)
    share.wake(INF)
    for _ in range(5):
        assert share.pick({INF, BATCH}) is INF
        share.charge(INF, 1.0)
    assert share.pick({BATCH}) is BATCH


def test_share_must_leave_room_for_steps() -> None:
    with pytest.raises(ValueError, match="batch share"):
        FairShare(1.0)


def test_results_and_errors_reach_the_caller() -> None:
    executor = PriorityExecutor("test")
    try:
        assert executor.submit(INF, pow, 2, 10).result(10) == 1024
        with pytest.raises(ZeroDivisionError):
            executor.submit(BATCH, lambda: 1 // 0).result(10)
        # the worker survives a failed task
        assert executor.submit(BATCH, len, "abc").result(10) == 3
    finally:
        executor.shutdown()


def test_a_cancelled_await_drops_its_queued_task() -> None:
    executor = PriorityExecutor("test")
    ran: list[str] = []

    async def scenario() -> None:
        gate, busy = _gated(executor)
        waiting = asyncio.create_task(executor.run(INF, ran.append, "dropped"))
        await asyncio.sleep(0.05)  # queued behind the gate
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        assert await executor.run(BATCH, ran.append, "kept") is None

    try:
        asyncio.run(scenario())
        assert ran == ["kept"]
    finally:
        executor.shutdown()


def test_shutdown_cancels_the_queue_and_refuses_new_work() -> None:
    executor = PriorityExecutor("test")
    gate, busy = _gated(executor)
    ran: list[str] = []
    futures = _queue_mixed(executor, ran)
    executor.shutdown()
    assert all(f.cancelled() for f in futures)
    gate.set()
    busy.result(10)  # the running task finishes on its own
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(INF, ran.append, "late")
    assert ran == []


def test_peer_queue_shares_a_kind_by_run_time() -> None:
    """One address's backlog does not make another's task wait behind all of it."""
    from node.scheduler import PeerQueue

    queue = PeerQueue()
    tasks = {name: (concurrent.futures.Future(), lambda: None) for name in ("a1", "a2", "a3", "b1", "b2")}
    for name in ("a1", "a2", "a3"):
        queue.append("a", tasks[name])
    order = []
    peer, task = queue.popleft()
    order.append(peer)
    queue.charge(peer, 1.0)
    queue.append("b", tasks["b1"])  # arrives while a has two waiting: starts at a's clock, not at 0
    queue.append("b", tasks["b2"])
    while len(queue):
        peer, task = queue.popleft()
        order.append(peer)
        queue.charge(peer, 1.0 if peer == "a" else 0.5)
    # b waits for one more of a's tasks (a tie, then arrival order), not for a's whole backlog;
    # then its half-second tasks run twice for each of a's one-second ones
    assert order == ["a", "a", "b", "b", "a"], order
    assert list(queue) == []
