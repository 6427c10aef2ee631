"""`swarm-node start`: serve a range of a model's blocks to the swarm until stopped.

Before anything slow (resolving or converting the model, importing torch, joining the
DHT), `preflight` reads the TLS files and checks that --port and --dht-port are free: a
bad file or a taken port is one line on stderr and exit code 1, within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from node.config import ServerConfig
from swarm import settings
from swarm.cli import run_event_loop
from swarm.config_flags import add_config_flags
from swarm.config_flags import config_from_args as config_from_flags
from swarm.rpc import PortInUse, check_port
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


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from swarm.default_model import resolve_model
    from swarm.model_names import model_name_of

    model = resolve_model(args.model)
    return config_from_flags(ServerConfig, args, model=model, model_name=args.model_name or model_name_of(model),
                             swarm_token=args.swarm_token or settings.swarm_token())


def preflight(args: argparse.Namespace) -> RpcSecurity:
    """The security settings, after checking the files and the ports (no model work yet)."""
    security = RpcSecurity.load(tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                swarm_token=args.swarm_token or settings.swarm_token())
    check_port(args.host, args.port, "gRPC", "--port")
    check_port(args.host, args.dht_port, "DHT", "--dht-port", udp=True)
    if security.serves_tls and not security.dials_tls:
        # its pushes to TLS peers would fail and every chained session would stall on it
        raise SecurityConfigError("--tls-cert needs --tls-ca too: the CA this server verifies its TLS peers "
                                  "against (for its pushes and probes)")
    return security


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
    try:
        security = preflight(args)
        config = config_from_args(args)
        return run_event_loop(lambda: serve(config, security))
    except (SecurityConfigError, PortInUse) as error:
        # one line, no traceback: what is wrong and which flag to change
        raise SystemExit(f"swarm-node: error: {error}") from None
