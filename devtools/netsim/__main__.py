"""`python -m devtools.netsim`: run one delay proxy until SIGINT or SIGTERM.

    python -m devtools.netsim --listen 127.0.0.1:7001 --target 127.0.0.1:6001 --delay-ms 20 [--rate-mbps 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from devtools.netsim.proxy import DelayProxy
from swarm.logs import setup_logging

logger = logging.getLogger(__name__)


def parse_host_port(text: str) -> tuple[str, int]:
    """"host:port" or "[v6addr]:port" -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.netsim",
        description="Forward TCP connections, adding a one-way delay (and a rate cap) each way.",
    )
    parser.add_argument("--listen", type=parse_host_port, required=True, metavar="HOST:PORT")
    parser.add_argument("--target", type=parse_host_port, required=True, metavar="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, each direction")
    parser.add_argument("--rate-mbps", type=float, default=None, help="rate cap per direction, megabits/s")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


async def serve(proxy: DelayProxy) -> None:
    """Runs the proxy until SIGINT/SIGTERM, then stops it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with proxy:
        await stop.wait()
        logger.info("signal received, stopping")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    rate = None if args.rate_mbps is None else args.rate_mbps * 1e6 / 8
    (listen_host, listen_port), (target_host, target_port) = args.listen, args.target
    proxy = DelayProxy(listen_host, listen_port, target_host, target_port, args.delay_ms / 1e3, rate)
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, with a little more jitter
        asyncio.run(serve(proxy))
    else:
        uvloop.run(serve(proxy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
