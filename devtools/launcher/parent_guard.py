"""Runs a command that is signalled (SIGTERM) when the process that launched it dies.

`python devtools/launcher/parent_guard.py PARENT_PID COMMAND...` arms Linux's
parent-death signal, checks that the launcher is still its parent (it may have died
before the signal was armed), then replaces itself with COMMAND (the signal survives
exec). `process.spawn_node` starts nodes through it instead of subprocess's
`preexec_fn`: Python code run between fork and exec in a process whose other threads
hold locks (gRPC's, torch's) can deadlock or crash the child; here the code runs in a
fresh interpreter. Run by path, not as a module, so it imports nothing of the project.

The signal follows the thread that forked, not the process: a node spawned from a
thread ends when that thread does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: parent_guard.py PARENT_PID COMMAND...")
    parent, command = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
        if os.getppid() != parent:
            sys.exit(f"the launcher (pid {parent}) died before this node started")
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
