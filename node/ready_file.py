"""The ready file: a small JSON object a node writes once it serves, for launchers and tests.

    server: {"kind": "server", "pid", "server_id", "grpc_address", "dht_address",
             "model", "blocks": "A:B", "state": "online" | "draining"}
    dht:    {"kind": "dht", "pid", "dht_address"}

Written atomically (PATH.tmp, then rename), so a reader sees the old object or the new
one, never half of one. Not a log: the log lines stay what users read.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def dialable(host: str, port: int) -> str:
    """"host:port" a local launcher can dial: a wildcard bind reads as 127.0.0.1."""
    return f"{'127.0.0.1' if host in _WILDCARDS else host}:{port}"


def write_ready_file(path: Path, facts: dict[str, Any]) -> None:
    """Replaces `path` with `facts` as one JSON line; logs (does not raise) on OSError."""
    tmp = Path(f"{path}.tmp")
    try:
        tmp.write_text(json.dumps(facts) + "\n")
        os.replace(tmp, path)
    except OSError as error:  # a launcher's file is not worth the server: it keeps serving
        logger.warning("could not write the ready file %s: %s", path, error)
