"""tests/wait.py: polled conditions return as soon as they hold and fail naming what did not happen."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.wait import WaitTimeout, async_wait_until, wait_for_value, wait_until


def test_returns_the_first_truthy_value_without_waiting_longer() -> None:
    calls = itertools.count()
    assert wait_for_value(lambda: next(calls) >= 2 and "ready", 5, "the third poll", interval=0.001) == "ready"
    assert next(calls) == 3


def test_timeout_names_what_did_not_happen_and_its_detail() -> None:
    with pytest.raises(WaitTimeout, match=r"(?s)0\.01 s waiting for: the moon.*state: dark"):
        wait_until(lambda: False, 0.01, "the moon", interval=0.001, detail=lambda: "state: dark")


def test_predicate_errors_are_not_swallowed() -> None:
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 1, "a division")


def test_async_wait_polls_without_blocking_the_loop() -> None:
    async def scenario() -> None:
        seen: list[int] = []
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, seen.append, 1)
        await async_wait_until(lambda: seen, 2, "the callback runs")
        with pytest.raises(WaitTimeout, match="never"):
            await async_wait_until(lambda: False, 0.01, "never")

    asyncio.run(scenario())
