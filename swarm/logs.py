"""Logging setup for the command-line entry points (libraries only call getLogger)."""

from __future__ import annotations

import logging

from swarm import settings

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = False, default_level: str = "INFO") -> None:
    """Configures the root logger once; SWARM_LOG_LEVEL overrides the level."""
    level_name = settings.log_level(verbose, default_level)
    logging.basicConfig(level=getattr(logging, level_name.upper(), logging.INFO), format=_FORMAT)
    # kademlia and rpcudp log every datagram at DEBUG and every failed ping at WARNING
    for noisy in ("kademlia", "rpcudp"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))
