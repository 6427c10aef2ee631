"""The edge of every command: what a failure prints, and the exit code it ends with.

    0    done; also when the reader of stdout went away (`swarm status --json | head`)
    1    runtime failure: the command line was fine, something outside it was not (a
         missing checkpoint, a taken port, no DHT node answering, no server for a block,
         an unreachable model hub, a refused token, an unreadable file)
    2    usage error: the command line cannot work as given (a malformed or missing flag,
         --blocks outside the model, --num-blocks beyond it)
    130  interrupted (Ctrl-C)

Each failure is ONE line on stderr, `PROG: error: WHAT WAS WRONG; WHAT TO DO`, and with
-v the traceback comes first. What becomes a line: the project's errors (`SwarmError`
and its subclasses, wherever defined) and the usual OS ones (a missing file, a denied
permission, a bind failure). Anything else is a bug, and keeps Python's traceback (the
traceback is what a bug report needs). argparse's own errors are one line too
(`OneLineParser`): the usage block is what --help is for.

Not here: the checks themselves (each command makes its own, cheap ones first) and
logging setup (`swarm.logs`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from swarm.errors import NoRoute, PeerUnavailable, RemoteError, SwarmError, Unauthenticated

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(SwarmError):
    """The command line cannot work as given (exit code 2); the message names the flag."""


_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    # what to do, for errors raised deep in the library whose message says only what failed
    (Unauthenticated, "give the swarm's token (--swarm-token or $SWARM_TOKEN)"),
    (NoRoute, "`swarm status` shows which blocks have no server"),
    (PeerUnavailable, "try again; `swarm status` shows the servers"),
    (RemoteError, "`swarm status` shows the servers; -v shows the details"),
    (PermissionError, "check the file's permissions, or choose another path"),
    (FileNotFoundError, "check the path"),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line (exit 2) that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def exit_code_of(error: BaseException) -> int:
    """The documented exit code for a failure the edge reports."""
    return EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILURE


def describe(error: BaseException) -> str:
    """What was wrong and what to do, in one line."""
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else ""
        text = f"{error.strerror}: {where}" if where else error.strerror
    else:
        text = str(error) or type(error).__name__
    text = " ".join(text.split())  # one line, whatever the message held
    for kind, hint in _HINTS:
        if isinstance(error, kind):
            return text if hint in text else f"{text}; {hint}"
    return text


def run_at_edge(prog: str, command: Callable[[], int], *, verbose: bool = False) -> int:
    """Runs `command` and turns what it raises into one line on stderr and an exit code."""
    try:
        code = command()
        sys.stdout.flush()  # a reader that left shows up here at the latest, not at exit
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # the command's own cleanup ran; no traceback for Ctrl-C
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_OK  # as Unix tools do: the reader had what it wanted
    except (SwarmError, OSError) as error:
        return _report(prog, error, error, verbose)
    except BaseExceptionGroup as group:  # from a TaskGroup: reported when every failure is one of ours
        ours, rest = group.split((SwarmError, OSError))
        if ours is None or rest is not None:
            raise
        return _report(prog, _first_leaf(ours), group, verbose)


def _report(prog: str, error: BaseException, raised: BaseException, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(raised)
    sys.stderr.write(f"{prog}: error: {describe(error)}\n")  # the user's one line (the edge's output, not a log)
    sys.stderr.flush()
    return exit_code_of(error)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _drop_stdout() -> None:
    """Points stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
        return
