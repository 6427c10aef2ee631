"""`python -m devtools.launcher --model default --blocks 0:10 10:20 20:30`: runs a local
swarm until Ctrl-C (or SIGTERM) and prints the DHT address clients should use."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from devtools.launcher.interrupt import sigterm_as_interrupt
from devtools.launcher.ready import LocalSwarmError
from devtools.launcher.swarm import LocalSwarm, LocalSwarmConfig
from swarm.records import BlockRange

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Runs a local swarm until interrupted; prints the DHT address on stdout."""
    from swarm.default_model import resolve_model
    from swarm.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m devtools.launcher", description=main.__doc__)
    parser.add_argument("--model", default="default", help="checkpoint dir, hub id or 'default'")
    parser.add_argument("--blocks", nargs="+", type=BlockRange.parse, default=None, metavar="A:B",
                        help="one server per range (default 0:10 10:20 20:30)")
    parser.add_argument("--workdir", type=Path, help="logs, ready files and pids file (default: a temp dir)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every server (repeat; e.g. --server-arg=--throughput)")
    args = parser.parse_args(argv)
    setup_logging()
    spans = tuple(args.blocks or (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30)))
    config = LocalSwarmConfig(resolve_model(args.model), spans, workdir=args.workdir,
                              server_args=tuple(args.server_arg))
    swarm = LocalSwarm(config)
    try:
        with sigterm_as_interrupt(), swarm:
            print(f"initial peers: {swarm.initial_peers[0]} (logs in {swarm.workdir})", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        logger.info("stopped")
    except LocalSwarmError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
