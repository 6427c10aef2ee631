"""What both command-line programs share: subcommand parsing, logging setup, the error edge.

Every command runs inside `swarm.cli_edge.run_at_edge`: its failures end as one line on
stderr with a documented exit code (usage 2, runtime 1; see that module).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from swarm.cli_edge import OneLineParser, run_at_edge
from swarm.logs import setup_logging
from swarm.progress import quiet_library_bars

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def run_cli(prog: str, description: str | None, commands: Sequence[AddParser], argv: list[str] | None,
            *, quiet: bool = False) -> int:
    """Parses `argv` with one subcommand per `commands` entry and runs the chosen one.

    Each subcommand's parser sets `run` (args -> exit code) as a default. `quiet` (the
    user's `swarm` commands) logs warnings and errors only unless -v: their output is the
    answer, not the machinery. A subcommand that is a long-running service may set its
    own default level instead (`parser.set_defaults(log_level="INFO")`).
    """
    parser = build_parser(prog, description, commands)
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", None) or ("WARNING" if quiet else "INFO")
    setup_logging(args.verbose, default_level=level)
    quiet_library_bars()  # no `\r` fragments from the libraries' bars in logs either
    return run_at_edge(prog, lambda: int(args.run(args)), verbose=args.verbose)


def build_parser(prog: str, description: str | None, commands: Sequence[AddParser]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of an error")
    # subparsers are OneLineParsers too (argparse makes them of the parent's class)
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(dest="command", required=True))
    for add in commands:
        add(sub)
    return parser


def run_event_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Runs `main()` on uvloop where available, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional (e.g. on Windows)
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
