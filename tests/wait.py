"""Polled conditions with deadlines: what tests use instead of sleeping to let something happen.

    wait_until(lambda: proc.poll() is not None, 30, "the server exits after SIGTERM")
    pids = wait_for_value(lambda: read_pids(path) or None, 60, "the bench writes its pids file")
    await async_wait_until(lambda: len(seen) == 3, 5, "three chunks reach the sink")
    wait_pids_gone(pids, 10)    # and pid_running(pid): what a test asks of /proc

Each helper polls `predicate` every `interval` seconds until it is truthy and returns
that value; past the deadline it raises `WaitTimeout` whose message names what did not
happen (and, if `detail` is given, what it returns then: a log tail, a state dump).
The poll interval is the only sleep here; a test never sleeps to let something happen.

What it does not do: catch exceptions the predicate raises (a failing check is a
failure, not a reason to keep waiting), or run the predicate in another thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL = 0.05
"""Seconds between polls: short next to every process start or RPC the tests wait on."""


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline (an AssertionError: pytest shows it as a failure)."""


def _timeout(what: str, timeout: float, detail: Callable[[], str] | None) -> WaitTimeout:
    message = f"timed out after {timeout:g} s waiting for: {what}"
    if detail is not None:
        message += f"\n{detail()}"
    return WaitTimeout(message)


def wait_for_value(predicate: Callable[[], T | None], timeout: float, what: str, *,
                   interval: float = DEFAULT_INTERVAL, detail: Callable[[], str] | None = None) -> T:
    """The first truthy value of `predicate()`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timeout(what, timeout, detail)
        time.sleep(interval)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, *,
               interval: float = DEFAULT_INTERVAL, detail: Callable[[], str] | None = None) -> None:
    """Returns once `predicate()` is truthy; raises `WaitTimeout` naming `what` past `timeout` seconds."""
    wait_for_value(predicate, timeout, what, interval=interval, detail=detail)


async def async_wait_until(predicate: Callable[[], object], timeout: float, what: str, *,
                           interval: float = 0.01, detail: Callable[[], str] | None = None) -> None:
    """`wait_until` for coroutines: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise _timeout(what, timeout, detail)
        await asyncio.sleep(interval)


def pid_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_pids_gone(pids: list[int], timeout: float, what: str = "the processes exit") -> None:
    """Returns once none of `pids` runs (killed process groups are reaped by init, not at once)."""
    wait_until(lambda: not any(pid_running(p) for p in pids), timeout, what,
               detail=lambda: f"still running: {[p for p in pids if pid_running(p)]}")
