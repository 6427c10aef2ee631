"""`swarm-node`: what a volunteer runs. Subcommands: start (serve blocks), dht (bootstrap)."""

from __future__ import annotations

import argparse
import sys

from node import dht_command, start_command
from swarm.cli import build_parser as _build, run_cli
from swarm.version import answer_version_flag

COMMANDS = (start_command.add_parser, dht_command.add_parser)


def build_parser() -> argparse.ArgumentParser:
    return _build("swarm-node", __doc__, COMMANDS)


def main(argv: list[str] | None = None) -> int:
    if answer_version_flag("swarm-node", argv):
        return 0
    return run_cli("swarm-node", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
