"""The ready file a `swarm-node` process writes once it serves (`--ready-file PATH`).

The node writes JSON atomically (PATH.tmp, then os.replace), so a reader sees either
no file or a whole one:

    server: {"kind": "server", "pid": 123, "server_id": "...", "grpc_address": "host:port",
             "dht_address": "host:port", "model": "name", "blocks": "A:B", "state": "online"}
    dht:    {"kind": "dht", "pid": 123, "dht_address": "host:port"}

A server rewrites it when its blocks change (a migration) and may write "state":
"draining" while it shuts down. This module only reads and validates it; it does not
wait (see process.py) or write it (the node does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.errors import SwarmError


class LocalSwarmError(SwarmError):
    """A process of a local swarm failed to start or wrote a bad ready file (details in the message)."""


SERVER_FIELDS = ("server_id", "grpc_address", "model", "blocks", "state")
"""Fields a server's ready file has on top of a DHT node's."""


@dataclass(frozen=True)
class NodeReady:
    """What a ready file says about its process."""

    kind: str
    """"server" or "dht"."""
    pid: int
    """The process that wrote it (a file from an earlier process in the same place is stale)."""
    dht_address: str
    """HOST:PORT of the process's DHT node."""
    grpc_address: str = ""
    """Servers: HOST:PORT clients and other servers call."""
    server_id: str = ""
    model: str = ""
    blocks: str = ""
    """Servers: the block range served now, "A:B"."""
    state: str = ""
    """Servers: "online", or "draining" during shutdown."""

    @property
    def address(self) -> str:
        """What others reach this process at: a server's gRPC address, a DHT node's UDP address."""
        return self.grpc_address if self.kind == "server" else self.dht_address


def parse_ready(text: str, source: Path) -> NodeReady:
    """A ready file's content, validated; LocalSwarmError names the file and what is wrong."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise LocalSwarmError(f"ready file {source} is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise LocalSwarmError(f"ready file {source}: expected an object, got {type(data).__name__}")
    kind = data.get("kind")
    required = ("dht_address", *SERVER_FIELDS) if kind == "server" else ("dht_address",)
    if kind not in ("server", "dht"):
        raise LocalSwarmError(f"ready file {source}: unknown kind {kind!r}")
    if not isinstance(data.get("pid"), int):
        raise LocalSwarmError(f"ready file {source}: pid is not an integer")
    for name in required:
        if not isinstance(data.get(name), str) or not data[name]:
            raise LocalSwarmError(f"ready file {source}: {name} missing or not a string")
    fields = {name: data[name] for name in required}
    return NodeReady(kind=kind, pid=data["pid"], **fields)


def read_ready(path: Path) -> NodeReady | None:
    """The ready file at `path`, or None while there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_ready(text, path)
