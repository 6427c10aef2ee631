"""What both command-line programs share: subcommand parsing, logging setup, exit code."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from swarm.logs import setup_logging

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def run_cli(prog: str, description: str | None, commands: Sequence[AddParser], argv: list[str] | None) -> int:
    """Parses `argv` with one subcommand per `commands` entry and runs the chosen one.

    Each subcommand's parser sets `run` (args -> exit code) as a default.
    """
    parser = build_parser(prog, description, commands)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130  # Ctrl-C: the command's own cleanup ran; no traceback for the user


def build_parser(prog: str, description: str | None, commands: Sequence[AddParser]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
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

