"""`swarm-node`: what a volunteer runs. Subcommands: start (serve blocks), dht (bootstrap)."""

from __future__ import annotations

import argparse
import sys

from swarm.logs import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm-node", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    from node import dht_command, start_command

    start_command.add_parser(sub)
    dht_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
