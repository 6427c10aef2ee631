"""The compute thread's queue: inference steps first, arrival order within a priority."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from node.scheduler import Priority, PriorityExecutor, Scheduling


def _gated(executor: PriorityExecutor) -> tuple[threading.Event, concurrent.futures.Future[None]]:
    """Occupies the worker until the returned event is set (so that a queue builds up)."""
    gate, started = threading.Event(), threading.Event()
    busy = executor.submit(Priority.BATCH, lambda: (started.set(), gate.wait(10))[0])
    assert started.wait(10)
    return gate, busy


def _queue_mixed(executor: PriorityExecutor, ran: list[str]) -> list[concurrent.futures.Future[None]]:
    return [executor.submit(priority, ran.append, name) for name, priority in
            (("batch-1", Priority.BATCH), ("step-1", Priority.INFERENCE), ("batch-2", Priority.BATCH),
             ("step-2", Priority.INFERENCE))]


@pytest.mark.parametrize(("scheduling", "expected"), [
    (Scheduling.PRIORITY, ["step-1", "step-2", "batch-1", "batch-2"]),
    (Scheduling.FIFO, ["batch-1", "step-1", "batch-2", "step-2"]),
])
def test_queued_tasks_run_by_priority_then_arrival(scheduling: Scheduling, expected: list[str]) -> None:
    executor = PriorityExecutor("test", scheduling)
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


def test_results_and_errors_reach_the_caller() -> None:
    executor = PriorityExecutor("test")
    try:
        assert executor.submit(Priority.INFERENCE, pow, 2, 10).result(10) == 1024
        with pytest.raises(ZeroDivisionError):
            executor.submit(Priority.BATCH, lambda: 1 // 0).result(10)
        # the worker survives a failed task
        assert executor.submit(Priority.BATCH, len, "abc").result(10) == 3
    finally:
        executor.shutdown()


def test_a_cancelled_await_drops_its_queued_task() -> None:
    executor = PriorityExecutor("test")
    ran: list[str] = []

    async def scenario() -> None:
        gate, busy = _gated(executor)
        waiting = asyncio.create_task(executor.run(Priority.INFERENCE, ran.append, "dropped"))
        await asyncio.sleep(0.05)  # queued behind the gate
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        assert await executor.run(Priority.BATCH, ran.append, "kept") is None

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
        executor.submit(Priority.INFERENCE, ran.append, "late")
    assert ran == []
