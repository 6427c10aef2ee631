"""Records, entries and identities for the identity, entry, storage and DHT tests."""

from __future__ import annotations

import dataclasses
import time

from swarm.codec.entries import VerifiedEntry, open_entry, sign_entry
from swarm.dht import keys
from swarm.identity import Identity
from swarm.records import BlockEntry, BlockRange, ModelEntry, ServerRecord, ServerState, Throughput

MODEL = "org/tiny-model"


def make_record(
    identity: Identity,
    blocks: tuple[int, int] = (0, 4),
    *,
    state: ServerState = ServerState.ONLINE,
    issued_at: float | None = None,
    ttl: float = 60.0,
    model: str = MODEL,
    num_blocks: int = 12,
    port: int = 5000,
    **fields: object,
) -> ServerRecord:
    issued = time.time() if issued_at is None else issued_at
    record = ServerRecord(
        server_id=identity.server_id,
        address=f"127.0.0.1:{port}",
        model=model,
        blocks=BlockRange(*blocks),
        state=state,
        throughput=Throughput(12.5, 250.0, 1000.0),
        free_cache_tokens=4096,
        cache_tokens=8192,
        model_num_blocks=num_blocks,
        hidden_size=64,
        version="0.1.0",
        issued_at=issued,
        expiration=issued + ttl,
    )
    return dataclasses.replace(record, **fields)  # type: ignore[arg-type]


def block_entry(identity: Identity, blocks: tuple[int, int] = (0, 4), **kwargs: object) -> BlockEntry:
    return BlockEntry.from_record(make_record(identity, blocks, **kwargs))  # type: ignore[arg-type]


def model_entry(identity: Identity, model: str = MODEL, *, issued_at: float | None = None, ttl: float = 60.0,
                num_blocks: int = 12) -> ModelEntry:
    issued = time.time() if issued_at is None else issued_at
    return ModelEntry(identity.server_id, model, num_blocks, 64, issued_at=issued, expiration=issued + ttl)


def verified(identity: Identity, body: object, key: str, now: float | None = None) -> VerifiedEntry:
    raw = sign_entry(identity, body, key)  # type: ignore[arg-type]
    return open_entry(raw, key, time.time() if now is None else now)


def signed_block(identity: Identity, block: int = 0, **kwargs: object) -> VerifiedEntry:
    entry = block_entry(identity, **kwargs)  # type: ignore[arg-type]
    return verified(identity, entry, keys.block_key(MODEL, block), now=entry.issued_at)
