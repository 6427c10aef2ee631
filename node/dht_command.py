"""`swarm-node dht`: run a DHT-only node (a bootstrap point for servers and clients).

It serves no blocks; it stores and answers DHT entries like every other node and gives
newcomers a first contact. With `--identity FILE` its DHT node id is derived from a
persistent key, so a restarted bootstrap node keeps its place in the key space.
With `--swarm-token` (or $SWARM_TOKEN) it joins a private swarm: DHT messages without
the token are dropped. A taken --port is one line on stderr and exit code 1.
Runs until SIGINT or SIGTERM, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from node.config import DhtNodeConfig
from node.ready_file import dialable, write_ready_file
from swarm.cli import run_event_loop
from swarm import settings
from swarm.config_flags import add_config_flags, config_from_args
from swarm.dht import DhtConfig, SwarmDHT
from swarm.identity import Identity
from swarm.rpc import check_port
from swarm.security import check_token

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Adds the `dht` subcommand to `swarm-node`."""
    parser = subparsers.add_parser("dht", help="run a DHT-only bootstrap node", description=__doc__)
    add_config_flags(parser, DhtNodeConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Runs the node until SIGINT/SIGTERM; returns the exit code."""
    config = config_from_args(DhtNodeConfig, args, swarm_token=args.swarm_token or settings.swarm_token())
    # a bad token or a taken port: one line and exit 1 (swarm.cli_edge), before any work
    if config.swarm_token is not None:
        check_token(config.swarm_token)
    check_port(config.host, config.port, "DHT", "--port", udp=True)
    return run_event_loop(lambda: serve(config))


async def serve(config: DhtNodeConfig) -> int:
    """Starts the DHT node, waits for a stop signal, stops the node."""
    node_id = None
    if config.identity_path is not None:
        node_id = bytes.fromhex(Identity.load_or_create(config.identity_path).server_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dht = await SwarmDHT.start(config.host, config.port, config.initial_peers, node_id=node_id,
                               config=DhtConfig(swarm_token=config.swarm_token))
    logger.info(
        "DHT node listening on %s:%d (node id %s, %d peers known)",
        config.host, dht.port, dht.node.node_id.hex()[:8], dht.num_peers,
    )
    try:
        if config.ready_file is not None:
            write_ready_file(config.ready_file, {"kind": "dht", "pid": os.getpid(),
                                                 "dht_address": dialable(config.host, dht.port)})
        await stop.wait()
    finally:
        logger.info("DHT node on %s:%d stopping", config.host, dht.port)
        await dht.stop()
    return 0
