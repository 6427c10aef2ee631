"""The session's deadline: one timer, moved by steps, a marker in the inbox once it passes."""

from __future__ import annotations

import asyncio

from node.alarm import Alarm

MARK = "deadline"


async def _arrival(inbox: asyncio.Queue[str], within: float) -> float | None:
    """Seconds until the marker came (None: not within `within`)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        assert await asyncio.wait_for(inbox.get(), within) == MARK
    except TimeoutError:
        return None
    return loop.time() - began


async def test_the_marker_comes_once_the_deadline_set_last_has_passed() -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()
    alarm = Alarm(inbox, MARK)
    alarm.set(0.05)
    for _ in range(3):  # steps keep moving it: it never fires meanwhile
        await asyncio.sleep(0.03)
        alarm.set(0.05)
    assert inbox.empty()
    waited = await _arrival(inbox, 1.0)
    assert waited is not None and 0.04 <= waited < 0.5
    assert await _arrival(inbox, 0.1) is None  # once


async def test_a_nearer_deadline_fires_first_and_cancel_stops_it() -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()
    alarm = Alarm(inbox, MARK)
    alarm.set(60.0)  # the idle timeout
    alarm.set(0.02)  # then a held copy's short wait
    waited = await _arrival(inbox, 1.0)
    assert waited is not None and waited < 0.5
    alarm.set(0.02)
    alarm.cancel()
    assert await _arrival(inbox, 0.1) is None


async def test_a_full_inbox_is_not_idle() -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue(1)
    inbox.put_nowait("a step")
    alarm = Alarm(inbox, MARK)
    alarm.set(0.01)
    await asyncio.sleep(0.05)  # fired into a full inbox: nothing lost, nothing raised
    assert inbox.get_nowait() == "a step" and inbox.empty()


async def test_a_marker_left_behind_by_a_moved_deadline_is_stale() -> None:
    """The deadline passes while a step is being worked on (the marker goes in), then the
    step moves it on: the marker taken next must not count (the session would close
    as idle, or send held copies early)."""
    inbox: asyncio.Queue[str] = asyncio.Queue()
    alarm = Alarm(inbox, MARK)
    alarm.set(0.01)
    await asyncio.sleep(0.05)  # fired: the marker waits in the inbox
    alarm.set(60.0)  # a step came and moved the deadline
    assert inbox.get_nowait() == MARK and not alarm.passed()
    alarm.set(0.01)
    assert await _arrival(inbox, 1.0) is not None and alarm.passed()  # a genuine one
