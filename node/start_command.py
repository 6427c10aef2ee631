"""`swarm-node start`: serve a range of a model's blocks to the swarm until stopped.

Before anything slow (loading blocks, importing torch, joining the DHT), `preflight`
reads the TLS files, checks that --port and --dht-port are free, that --model is a
checkpoint directory or a reachable hub id, that --quantization can run (bitsandbytes is
installed), and that --blocks / --num-blocks fit the model's config.json: a bad file, a taken port or a missing model is one line on stderr
and exit code 1, a range that does not fit the model exit code 2, within a second
(`swarm.cli_edge` prints them).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from node.config import ServerConfig
from node.heap import limit_malloc_arenas
from swarm import settings
from swarm.cli import run_event_loop
from swarm.config_flags import add_config_flags
from swarm.config_flags import config_from_args as config_from_flags
from swarm.cli_edge import UsageError
from swarm.model.options import check_quantization
from swarm.model.source import ModelSource, check_model_source
from swarm.records import BlockRange
from swarm.rpc import check_port
from swarm.security import RpcSecurity, SecurityConfigError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("start", help="serve blocks of a model",
                              description="Serve a contiguous range of a model's transformer blocks.")
    p.add_argument("--model", required=True,
                   help="checkpoint directory, hub id, or 'default' for SmolLM2-135M-Instruct")
    p.add_argument("--model-name", help="name to announce (default: the checkpoint's directory name)")
    add_config_flags(p, ServerConfig)
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace, model: str) -> ServerConfig:
    """The server's config, for the checked checkpoint directory or hub id `model`."""
    from swarm.model_names import model_name_of

    return config_from_flags(ServerConfig, args, model=model, model_name=args.model_name or model_name_of(model),
                             swarm_token=args.swarm_token or settings.swarm_token())


def preflight(args: argparse.Namespace) -> tuple[RpcSecurity, ModelSource]:
    """The security settings and the model, after checking files, ports and blocks (no loading yet)."""
    security = RpcSecurity.load(tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                swarm_token=args.swarm_token or settings.swarm_token())
    check_port(args.host, args.port, "gRPC", "--port")
    check_port(args.host, args.dht_port, "DHT", "--dht-port", udp=True)
    if security.serves_tls and not security.dials_tls:
        # its pushes to TLS peers would fail and every chained session would stall on it
        raise SecurityConfigError("--tls-cert needs --tls-ca too: the CA this server verifies its TLS peers "
                                  "against (for its pushes and probes)")
    check_quantization(args.quantization)  # bitsandbytes present (not imported: torch stays unloaded)
    source = check_model_source(args.model)
    if source.num_blocks is not None:
        check_blocks(args.blocks, args.num_blocks, source.num_blocks)
    return security, source


def check_blocks(blocks: BlockRange | None, count: int | None, num_blocks: int) -> None:
    """`UsageError` unless --blocks lies within the model and --num-blocks is at most its size."""
    if blocks is not None and blocks.end > num_blocks:
        raise UsageError(f"--blocks {blocks} ends past the model's {num_blocks} blocks; "
                         f"give a range within 0:{num_blocks}")
    if count is not None and count > num_blocks:
        raise UsageError(f"--num-blocks {count} is more than the model's {num_blocks} blocks; "
                         f"give at most {num_blocks}, or auto")


async def serve(config: ServerConfig, security: RpcSecurity) -> int:
    from node.server import BlockServer  # torch and transformers: only for this command

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await BlockServer(config, security).run(stop)
    logger.info("server stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    security, source = preflight(args)  # what it raises is one line on stderr (swarm.cli_edge)
    limit_malloc_arenas()  # before the loop, gRPC and torch start their threads
    config = config_from_args(args, source.path)
    return run_event_loop(lambda: serve(config, security))
