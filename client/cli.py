"""`swarm`: what a user runs. Subcommands: generate, chat, status."""

from __future__ import annotations

import sys

from client import chat_command, generate_command, status_command
from swarm.cli import run_cli
from swarm.errors import Unauthenticated
from swarm.security import SecurityConfigError

COMMANDS = (generate_command.add_parser, chat_command.add_parser, status_command.add_parser)


def main(argv: list[str] | None = None) -> int:
    try:
        return run_cli("swarm", __doc__, COMMANDS, argv)
    except (SecurityConfigError, Unauthenticated) as error:
        # a bad --tls-ca, or a private swarm refusing our token: one line, no traceback
        raise SystemExit(f"swarm: error: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
