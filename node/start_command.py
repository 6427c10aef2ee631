"""`swarm-node start`: serve a range of a model's blocks to the swarm until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from node.config import ServerConfig
from swarm.cli import run_event_loop
from swarm.config_flags import add_config_flags
from swarm.config_flags import config_from_args as config_from_flags

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("start", help="serve blocks of a model",
                              description="Serve a contiguous range of a model's transformer blocks.")
    p.add_argument("--model", required=True,
                   help="checkpoint directory, hub id, or 'default' for SmolLM2-135M-Instruct")
    p.add_argument("--model-name", help="name to announce (default: the checkpoint's directory name)")
    add_config_flags(p, ServerConfig)
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from swarm.default_model import resolve_model
    from swarm.model_names import model_name_of

    model = resolve_model(args.model)
    return config_from_flags(ServerConfig, args, model=model, model_name=args.model_name or model_name_of(model))


async def serve(config: ServerConfig) -> int:
    from node.server import BlockServer  # torch and transformers: only for this command

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await BlockServer(config).run(stop)
    logger.info("server stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    return run_event_loop(lambda: serve(config))
