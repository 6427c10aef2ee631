"""The DHT's key space: which keys exist, what each must hold, and their digests.

    MODEL/block/N     BlockEntry per server covering block N of MODEL
    MODEL/index       ModelEntry per server of MODEL (model shape, who serves it)
    swarm/models      ModelEntry per server, any model (what `swarm status` lists)
    server/<id>       the full ServerRecord of server <id> (only that server's entry)

Model names may contain "/" (hub ids like "org/name"); keys are parsed from the right, so
they stay unambiguous. Kademlia places a key at SHA-1(key), as the `kademlia` package
does. Pure: no network, no clock.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

from swarm.codec.entries import EntryKind, VerifiedEntry
from swarm.errors import RecordRejected
from swarm.identity import is_server_id
from swarm.records import BlockEntry, ModelEntry

MODELS_KEY = "swarm/models"
"""The global key listing the models served on the swarm."""

_BLOCK_KEY = re.compile(r"^(?P<model>.+)/block/(?P<block>0|[1-9][0-9]{0,5})$")
_SERVER_PREFIX = "server/"
_INDEX_SUFFIX = "/index"


class KeyKind(enum.Enum):
    """The kinds of DHT keys."""

    RECORD = "record"
    BLOCK = "block"
    INDEX = "index"
    MODELS = "models"


@dataclass(frozen=True)
class ParsedKey:
    """What a DHT key names."""

    kind: KeyKind
    model: str = ""
    """The model (BLOCK and INDEX keys)."""
    block: int = -1
    """The block index (BLOCK keys)."""
    server_id: str = ""
    """The server whose record it is (RECORD keys)."""

    @property
    def entry_kind(self) -> EntryKind:
        """The body every entry under this key must carry."""
        return {
            KeyKind.RECORD: EntryKind.RECORD,
            KeyKind.BLOCK: EntryKind.BLOCK,
            KeyKind.INDEX: EntryKind.MODEL,
            KeyKind.MODELS: EntryKind.MODEL,
        }[self.kind]


def block_key(model: str, block: int) -> str:
    """The key listing the servers of block `block` of `model`."""
    return f"{model}/block/{block}"


def index_key(model: str) -> str:
    """The key listing the servers of `model` with its shape."""
    return f"{model}{_INDEX_SUFFIX}"


def server_key(server_id: str) -> str:
    """The key holding the full record of server `server_id`."""
    return f"{_SERVER_PREFIX}{server_id}"


def key_digest(key: str) -> bytes:
    """The 20-byte Kademlia id of a key (SHA-1 of its UTF-8 bytes, as `kademlia` does)."""
    return hashlib.sha1(key.encode("utf-8")).digest()


def parse_key(key: str) -> ParsedKey:
    """What `key` names; raises RecordRejected for a key outside the key space."""
    if key == MODELS_KEY:
        return ParsedKey(KeyKind.MODELS)
    if key.startswith(_SERVER_PREFIX) and is_server_id(key[len(_SERVER_PREFIX) :]):
        return ParsedKey(KeyKind.RECORD, server_id=key[len(_SERVER_PREFIX) :])
    if key.endswith(_INDEX_SUFFIX) and len(key) > len(_INDEX_SUFFIX):
        return ParsedKey(KeyKind.INDEX, model=key[: -len(_INDEX_SUFFIX)])
    match = _BLOCK_KEY.match(key)
    if match:
        return ParsedKey(KeyKind.BLOCK, model=match["model"], block=int(match["block"]))
    raise RecordRejected(f"{key!r} is not a swarm DHT key")


def check_entry_fits(key: ParsedKey, entry: VerifiedEntry) -> None:
    """Raises RecordRejected unless `entry` may be stored under `key`.

    A record only under its own server's key; a block entry only under a block it covers;
    a model entry under the index key only for that model.
    """
    if entry.kind is not key.entry_kind:
        raise RecordRejected(
            f"key {entry.key!r} holds {key.entry_kind.value} entries, got a {entry.kind.value}"
        )
    body = entry.body
    if key.kind is KeyKind.RECORD and entry.server_id != key.server_id:
        raise RecordRejected(f"server {entry.server_id} cannot store under {entry.key!r}")
    if isinstance(body, BlockEntry) and key.block not in body.blocks:
        raise RecordRejected(f"entry for blocks {body.blocks} does not cover block {key.block}")
    if isinstance(body, ModelEntry) and key.kind is KeyKind.INDEX and body.model != key.model:
        raise RecordRejected(f"entry for model {body.model!r} under the index of {key.model!r}")
