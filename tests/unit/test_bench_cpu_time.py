"""`devtools.bench.cpu_time`: CPU seconds of processes around each piece of a decoding."""

from __future__ import annotations

import os
import time

import pytest

from devtools.bench import cpu_time
from devtools.bench.workloads import DecodeRun, GreedySteps, run_through

pytestmark = pytest.mark.skipif(not cpu_time.available(), reason="needs Linux per-thread schedstat")


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _decoding(work: list[float]) -> GreedySteps:
    _busy(0.2)  # the prefill: not metered
    yield
    for seconds in work:
        time.sleep(0.05)  # waiting costs no CPU
        _busy(seconds)
        yield
    return DecodeRun((1,), 0.2, tuple(work))


def test_each_step_is_metered_and_the_prefill_is_not() -> None:
    per_step: dict[str, list[float]] = {"here": [], "gone": []}
    run = run_through(cpu_time.metered(_decoding([0.02, 0.1]), {"here": [os.getpid()], "gone": [2**22 + 1]},
                                       per_step))
    assert run == DecodeRun((1,), 0.2, (0.02, 0.1))
    here = per_step["here"]
    assert len(here) == 2
    assert 0.02 <= here[0] < 0.06 and 0.1 <= here[1] < 0.14
    assert per_step["gone"] == [0.0, 0.0]


def test_gone_processes_count_nothing() -> None:
    assert cpu_time.cpu_seconds([2**22 + 12345]) == 0.0
    assert cpu_time.cpu_seconds([os.getpid()]) > 0.0
