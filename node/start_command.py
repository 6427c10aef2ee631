"""`swarm-node start`: serve a range of a model's blocks to the swarm until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from node.config import ServerConfig
from node.scheduler import DEFAULT_BATCH_SHARE, Scheduling
from swarm.cli import run_event_loop
from swarm.dht import parse_address
from swarm.records import BlockRange

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("start", help="serve blocks of a model",
                              description="Serve a contiguous range of a model's transformer blocks.")
    p.add_argument("--model", required=True,
                   help="checkpoint directory, hub id, or 'default' for SmolLM2-135M-Instruct")
    p.add_argument("--model-name", help="name to announce (default: the checkpoint's directory name)")
    p.add_argument("--initial-peers", nargs="*", default=[], metavar="HOST:PORT",
                   help="DHT peers to join (none: start a new swarm)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--num-blocks", type=_num_blocks, default="auto", metavar="N|auto",
                       help="serve this many blocks where the swarm needs them; 'auto' (default): as "
                            "many as memory allows, leaving room for the KV cache")
    which.add_argument("--blocks", type=BlockRange.parse, metavar="A:B", help="serve exactly blocks A..B-1")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="gRPC port (default: any free port)")
    p.add_argument("--dht-port", type=int, default=0, help="DHT UDP port (default: any free port)")
    p.add_argument("--public-address", metavar="HOST:PORT",
                   help="address clients should dial (a proxy or NAT mapping; default HOST:PORT)")
    p.add_argument("--torch-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="compute dtype (default: the checkpoint's)")
    p.add_argument("--cache-tokens", type=int, default=8192,
                   help="KV-cache budget in tokens, all sessions together (default 8192)")
    p.add_argument("--max-alloc-timeout", type=float, default=10.0,
                   help="seconds a session waits for cache room before RESOURCE_EXHAUSTED (default 10)")
    p.add_argument("--session-idle-timeout", type=float, default=300.0,
                   help="close sessions idle this many seconds (default 300)")
    p.add_argument("--update-period", type=float, default=30.0,
                   help="seconds between DHT announcements (default 30)")
    p.add_argument("--drain-grace", type=float, default=30.0,
                   help="on shutdown, seconds open sessions may finish (default 30)")
    p.add_argument("--push-timeout", type=float, default=5.0,
                   help="seconds a push to the next server of a chained route may take (default 5)")
    p.add_argument("--balance-period", type=float, default=120.0,
                   help="mean seconds between rebalancing checks, jittered +-50%% (default 120)")
    p.add_argument("--balance-quality", type=float, default=0.95,
                   help="move only when the swarm gets faster by more than 1/Q (0 < Q <= 1; default "
                        "0.95; lower it for models that load slowly)")
    p.add_argument("--throughput", type=float,
                   help="tokens/s per block to announce instead of measuring")
    p.add_argument("--metrics-port", type=int,
                   help="serve Prometheus metrics on this port of --host (default: off)")
    p.add_argument("--identity", type=Path, help="key file of this server's identity (created if missing)")
    p.add_argument("--scheduling", choices=[s.value for s in Scheduling], default=Scheduling.PRIORITY.value,
                   help="compute queue order: priority (inference steps before Forward/Backward passes, "
                        "which run a block at a time; default) or fifo (arrival order, a whole pass at once; "
                        "for comparison)")
    p.add_argument("--batch-share", type=_batch_share, default=DEFAULT_BATCH_SHARE, metavar="S",
                   help="least share of a busy compute thread for Forward/Backward work under priority "
                        f"scheduling, 0 <= S < 1 (default {DEFAULT_BATCH_SHARE}; 0: only when no step waits)")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from swarm.default_model import resolve_model
    from swarm.model_names import model_name_of

    model = resolve_model(args.model)
    return ServerConfig(
        model=model,
        model_name=args.model_name or model_name_of(model),
        initial_peers=tuple(parse_address(p) for p in args.initial_peers),
        blocks=args.blocks,
        num_blocks=args.num_blocks,
        host=args.host,
        port=args.port,
        dht_port=args.dht_port,
        public_address=args.public_address,
        torch_dtype=args.torch_dtype,
        cache_tokens=args.cache_tokens,
        max_alloc_timeout=args.max_alloc_timeout,
        session_idle_timeout=args.session_idle_timeout,
        update_period=args.update_period,
        drain_grace=args.drain_grace,
        identity_path=args.identity,
        throughput=args.throughput,
        push_timeout=args.push_timeout,
        balance_period=args.balance_period,
        balance_quality=args.balance_quality,
        metrics_port=args.metrics_port,
        scheduling=Scheduling(args.scheduling),
        batch_share=args.batch_share,
    )


def _batch_share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"--batch-share must be in [0, 1), got {text}")
    return value


def _num_blocks(text: str) -> int | None:
    """N > 0, or "auto" (None: as many as memory allows)."""
    if text == "auto":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--num-blocks must be >= 1 or auto, got {text}")
    return value


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
