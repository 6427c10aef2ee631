"""One malloc arena for a block server's process (glibc), unless MALLOC_ARENA_MAX says otherwise.

glibc gives every thread that allocates concurrently an arena of its own (up to 8 per
core) and keeps an arena's freed pages for reuse by that arena only. A server allocates
its big tensors on two threads (decode steps inline on the event loop, prefill chunks and
batch work on the compute thread), so each thread's arena kept the high-water mark of its
own work: an 8k session through SmolLM2's blocks 10:20 grew the server's peak resident
set by 324-415 MiB with the default arenas and by 234-273 MiB with one, over a KV cache
of 120 MiB (tests/integration/test_long_context.py). Small allocations still go through
each thread's lock-free tcache, so one arena costs the hot path nothing measurable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from swarm import settings

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena limit (glibc's malloc.h)."""
SERVER_ARENAS = 1


def limit_malloc_arenas(arenas: int = SERVER_ARENAS) -> bool:
    """Caps glibc's malloc arenas for threads created from now on; False where it cannot
    (not glibc, or MALLOC_ARENA_MAX already chose: the operator's word wins)."""
    if settings.malloc_arenas_chosen():
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    done = bool(mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))
    logger.debug("malloc arenas capped at %d: %s", arenas, done)
    return done
