"""`node.heap.limit_malloc_arenas`: threads of a server share one glibc arena, unless
MALLOC_ARENA_MAX chose. Each case runs in a fresh interpreter (arenas are per process):
four threads allocate while all alive, then glibc's malloc_stats() lists the arenas on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import ctypes, sys, threading
from node.heap import limit_malloc_arenas
if sys.argv[1] == "limit":
    print(limit_malloc_arenas(), flush=True)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
together = threading.Barrier(4)
def work():
    together.wait()  # alive together: glibc gives each new thread a new arena until the limit
    held = [libc.malloc(4096) for _ in range(2000)]
threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.malloc_stats()
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def _arenas(mode: str, env: dict[str, str]) -> tuple[str, int]:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(root)}, check=True)
    return done.stdout.strip(), sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def _env_without_arena_max() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}


def test_four_allocating_threads_share_one_arena_once_limited() -> None:
    said, arenas = _arenas("limit", _env_without_arena_max())
    assert said == "True"
    assert arenas == 1


def test_without_the_limit_the_same_threads_get_arenas_of_their_own() -> None:
    # the control: the probe does make glibc add arenas, so the case above shows the limit
    _, arenas = _arenas("none", _env_without_arena_max())
    assert arenas > 1


def test_an_operators_malloc_arena_max_wins() -> None:
    said, arenas = _arenas("limit", {**_env_without_arena_max(), "MALLOC_ARENA_MAX": "3"})
    assert said == "False"
    assert 1 < arenas <= 3
