"""`swarm`: what a user runs. Subcommands: generate, chat, status, serve.

Logs warnings and errors only unless -v (the output is the answer); failures are one line
on stderr with exit code 1 (2: a wrong command line), see `swarm.cli_edge`.
"""

from __future__ import annotations

import sys

from client import chat_command, generate_command, status_command
from gateway import cli as serve_command
from swarm.cli import run_cli
from swarm.version import answer_version_flag

COMMANDS = (generate_command.add_parser, chat_command.add_parser, status_command.add_parser,
            serve_command.add_parser)


def main(argv: list[str] | None = None) -> int:
    if answer_version_flag("swarm", argv):
        return 0
    return run_cli("swarm", __doc__, COMMANDS, argv, quiet=True)


if __name__ == "__main__":
    sys.exit(main())
