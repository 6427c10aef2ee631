"""Short tasks on the caller's thread: only when the worker would run them at once, charged alike."""

from __future__ import annotations

import asyncio
import threading

from node.scheduler import Priority, PriorityExecutor

INF, BATCH = Priority.INFERENCE, Priority.BATCH


def test_an_idle_worker_lets_a_short_task_run_on_the_caller_thread() -> None:
    executor = PriorityExecutor("test")
    try:
        caller = threading.get_ident()
        ran_on = asyncio.run(executor.run(INF, threading.get_ident, inline=True))
        assert ran_on == caller and executor.inline_runs == 1
        assert executor.busy_seconds[INF] > 0.0  # charged like a task of the worker
        # without inline=True a task always goes to the worker
        assert asyncio.run(executor.run(INF, threading.get_ident)) != caller
    finally:
        executor.shutdown()


def test_a_busy_worker_or_a_queue_sends_it_to_the_worker_in_turn() -> None:
    executor = PriorityExecutor("test", batch_share=0.0)
    gate, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(10)

    async def scenario() -> tuple[int, int]:
        busy = executor.submit(BATCH, hold)
        assert started.wait(10)
        queued = executor.submit(BATCH, threading.get_ident)
        step = asyncio.create_task(executor.run(INF, threading.get_ident, inline=True))
        await asyncio.sleep(0.05)
        assert not step.done()  # waits for the running task like any queued step
        gate.set()
        busy.result(10)
        return await step, queued.result(10)

    try:
        step_thread, batch_thread = asyncio.run(scenario())
        assert step_thread == batch_thread != threading.get_ident()
        assert executor.inline_runs == 0
    finally:
        executor.shutdown()


def test_the_worker_starts_nothing_while_a_task_runs_inline() -> None:
    executor = PriorityExecutor("test")
    order: list[str] = []
    submitted = threading.Event()

    def step() -> None:
        order.append("step begins")
        # batch work arriving now (from another thread) waits for the inline step
        threading.Thread(target=lambda: (executor.submit(BATCH, order.append, "batch"), submitted.set())).start()
        assert submitted.wait(10)
        threading.Event().wait(0.05)
        order.append("step ends")

    try:
        asyncio.run(executor.run(INF, step, inline=True))
        executor.submit(BATCH, len, "").result(10)  # the queue has drained
        assert order == ["step begins", "step ends", "batch"]
        assert executor.inline_runs == 1
    finally:
        executor.shutdown()


def test_after_a_slow_one_they_go_to_the_worker() -> None:
    now = [0.0]
    executor = PriorityExecutor("test", clock=lambda: now[0], inline_limit=0.05)

    def slow() -> int:
        now[0] += 0.2  # the executor's clock: this task "took" 0.2 s
        return threading.get_ident()

    try:
        caller = threading.get_ident()
        assert asyncio.run(executor.run(INF, slow, inline=True)) == caller
        assert asyncio.run(executor.run(INF, threading.get_ident, inline=True)) != caller  # too slow last time
        assert asyncio.run(executor.run(INF, threading.get_ident, inline=True)) == caller  # fast again
    finally:
        executor.shutdown()


def test_an_inline_step_does_not_wake_an_idle_worker() -> None:
    executor = PriorityExecutor("test")
    notified: list[int] = []
    real_notify = executor._wakeup.notify

    def counting_notify(n: int = 1) -> None:
        notified.append(n)
        real_notify(n)

    executor._wakeup.notify = counting_notify  # type: ignore[method-assign]

    async def steps() -> None:
        for _ in range(20):
            await executor.run(INF, int, inline=True)

    try:
        asyncio.run(steps())
        assert executor.inline_runs == 20
        assert notified == []  # nothing was queued: the worker slept through all 20
        # queued work still wakes it
        assert executor.submit(BATCH, threading.get_ident).result(10) != threading.get_ident()
        assert notified
    finally:
        executor.shutdown()
