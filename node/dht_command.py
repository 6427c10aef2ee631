"""`swarm-node dht`: run a DHT-only node (a bootstrap point for servers and clients).

It serves no blocks; it stores and answers DHT entries like every other node and gives
newcomers a first contact. With `--identity FILE` its DHT node id is derived from a
persistent key, so a restarted bootstrap node keeps its place in the key space.
Runs until SIGINT or SIGTERM, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from swarm.cli import run_event_loop
from swarm.dht import SwarmDHT, parse_address
from swarm.identity import Identity

logger = logging.getLogger(__name__)


def peer_address(text: str) -> tuple[str, int]:
    """argparse type for HOST:PORT."""
    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(subparsers: Any) -> None:
    """Adds the `dht` subcommand to `swarm-node`."""
    parser = subparsers.add_parser("dht", help="run a DHT-only bootstrap node", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="UDP port to listen on (0: any free port)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all interfaces)")
    parser.add_argument(
        "--initial-peers", nargs="*", type=peer_address, default=[], metavar="HOST:PORT",
        help="DHT nodes to join through (none: start a new swarm)",
    )
    parser.add_argument(
        "--identity", default=None, metavar="FILE", help="key file (created if missing) fixing the node id"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Runs the node until SIGINT/SIGTERM; returns the exit code."""
    node_id = None
    if args.identity:
        identity = Identity.load_or_create(args.identity)
        node_id = bytes.fromhex(identity.server_id)
    return run_event_loop(lambda: serve(args.host, args.port, args.initial_peers, node_id))


async def serve(host: str, port: int, initial_peers: list[tuple[str, int]], node_id: bytes | None) -> int:
    """Starts the DHT node, waits for a stop signal, stops the node."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dht = await SwarmDHT.start(host, port, initial_peers, node_id=node_id)
    logger.info(
        "DHT node listening on %s:%d (node id %s, %d peers known)",
        host, dht.port, dht.node.node_id.hex()[:8], dht.num_peers,
    )
    try:
        await stop.wait()
    finally:
        logger.info("DHT node on %s:%d stopping", host, dht.port)
        await dht.stop()
    return 0
