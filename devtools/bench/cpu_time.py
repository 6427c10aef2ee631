"""CPU time that a benchmark's processes spend per decoding step, from Linux's /proc.

Wall time per token on this 2-core VM drifts by several ms from second to second; the CPU
that each contender's processes burn per token is much steadier, and on a machine whose
cores the contenders share it is what the wall time is made of. `metered` wraps a
decoding (`devtools.bench.workloads.GreedySteps`) and sums, around each of its pieces, the
run time of every thread of the given processes (/proc/PID/task/TID/schedstat, in ns).
The snapshots are taken between pieces, outside the timed code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from devtools.bench.workloads import DecodeRun, GreedySteps

PROC = Path("/proc")


def available() -> bool:
    """Whether this system reports per-thread run times (Linux with schedstats)."""
    return (PROC / str(os.getpid()) / "task" / str(os.getpid()) / "schedstat").exists()


def cpu_seconds(pids: Sequence[int]) -> float:
    """Run time so far of all threads of `pids` (threads that ended are not counted)."""
    total = 0
    for pid in pids:
        try:
            threads = os.listdir(PROC / str(pid) / "task")
        except FileNotFoundError:
            continue
        for thread in threads:
            try:
                total += int((PROC / str(pid) / "task" / thread / "schedstat").read_text().split()[0])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue  # (a thread that just ended)
    return total / 1e9


def metered(steps: GreedySteps, groups: Mapping[str, Sequence[int]], per_step: Mapping[str, list[float]]
            ) -> GreedySteps:
    """`steps` as it is, appending to `per_step[name]` the CPU seconds the processes of
    `groups[name]` spent in each step (not in the prefill, the first piece)."""
    pieces = 0
    while True:
        before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        try:
            next(steps)
        except StopIteration as done:
            run: DecodeRun = done.value
            return run
        if pieces:
            for name, pids in groups.items():
                per_step[name].append(cpu_seconds(pids) - before[name])
        pieces += 1
        yield
