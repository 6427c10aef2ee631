"""Signed DHT entries: our dataclasses to `SignedEntry` bytes and back, verified.

What a server stores under a DHT key is a `SignedEntry`: a serialized `DhtPayload`
(key, issued_at, expiration and one body: ServerRecord, BlockEntry or ModelEntry) and
the Ed25519 signature of exactly those bytes. `sign_*` make them; `open_entry` checks,
in this order, size, decoding, signature, key, times, body kind and every body field,
and returns a `VerifiedEntry` whose server id is derived from the public key (never
taken from the peer). A DHT value (`DhtValue`) is a list of such entries, one per
server; `encode_value`/`decode_value` move it as bytes.

Replay protection and per-key storage rules live in `swarm.dht.storage`; which body a
key must carry in `swarm.dht.keys`. This module knows nothing about the network.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from swarm.codec import bodies
from swarm.errors import CodecError, InvalidInput, RecordRejected
from swarm.identity import Identity, server_id_of, verify
from swarm.records import BlockEntry, ModelEntry, ServerRecord
from swarm.v1 import record_pb2

EntryBody = ServerRecord | BlockEntry | ModelEntry
"""What a DHT entry carries."""

MAX_KEY_BYTES = 256
"""Longest DHT key (UTF-8 bytes); a block key is a model name plus ~17 bytes."""


class EntryKind(enum.Enum):
    """Which body a DhtPayload carries (the name of its `oneof body` field)."""

    RECORD = "record"
    BLOCK = "block"
    MODEL = "model"


@dataclass(frozen=True)
class EntryLimits:
    """Bounds applied when opening an entry from an untrusted peer."""

    max_entry_bytes: int = 4096
    """Largest serialized SignedEntry of any kind. A record at every field's limit is
    ~2.1 KB (32 next hops of ~50 B, strings at their limits), so one fits a < 8 KB store
    request with room to spare (tests/unit/test_dht_limits.py builds it)."""
    max_compact_entry_bytes: int = 512
    """Largest BlockEntry/ModelEntry SignedEntry. At every field's limit one is ~424 B
    (key ~145 B, address 128 B, public key and signature ~100 B); typical ones ~180 B."""
    max_ttl: float = 3600.0
    """Most seconds an entry may live past its issued_at (bounds how long garbage from
    a server that vanished can linger; servers re-announce well before)."""
    max_clock_skew: float = 300.0
    """Most seconds an entry's issued_at may lie in the future of our clock."""
    max_value_entries: int = 1024
    """Most entries decoded from one DhtValue."""
    max_value_bytes: int = 65536
    """Largest serialized DhtValue decoded (one UDP datagram holds less)."""


DEFAULT_ENTRY_LIMITS = EntryLimits()


@dataclass(frozen=True)
class VerifiedEntry:
    """An entry whose signature, key, times, size and fields have been checked."""

    key: str
    """The DHT key the server signed this entry for."""
    kind: EntryKind
    server_id: str
    """Derived from `public_key`."""
    public_key: bytes
    issued_at: float
    expiration: float
    body: EntryBody
    """The body, with server_id, issued_at and expiration filled in."""
    raw: bytes
    """The serialized SignedEntry, as received (what gets stored and forwarded)."""


def _kind_of(body: EntryBody) -> EntryKind:
    if isinstance(body, ServerRecord):
        return EntryKind.RECORD
    if isinstance(body, BlockEntry):
        return EntryKind.BLOCK
    return EntryKind.MODEL


def _check_times(issued_at: float, expiration: float) -> None:
    if not (math.isfinite(issued_at) and math.isfinite(expiration)):
        raise RecordRejected(f"entry times must be finite, got {issued_at} and {expiration}")
    if expiration <= issued_at:
        raise RecordRejected(f"entry expires ({expiration}) before it was issued ({issued_at})")


def sign_entry(identity: Identity, body: EntryBody, key: str) -> bytes:
    """The serialized SignedEntry of `body` under `key`, signed by `identity`.

    `body.issued_at` and `body.expiration` are signed as they are; `body.server_id` must
    be the identity's. Raises InvalidInput or RecordRejected for what peers would reject.
    """
    if body.server_id != identity.server_id:
        raise InvalidInput(f"body of server {body.server_id!r} cannot be signed by {identity.server_id}")
    _check_key(key)
    _check_times(body.issued_at, body.expiration)
    payload = record_pb2.DhtPayload(key=key, issued_at=body.issued_at, expiration=body.expiration)
    if isinstance(body, ServerRecord):
        payload.record.CopyFrom(bodies.record_to_proto(body))
    elif isinstance(body, BlockEntry):
        payload.block.CopyFrom(bodies.block_entry_to_proto(body))
    else:
        payload.model.CopyFrom(bodies.model_entry_to_proto(body))
    data = payload.SerializeToString(deterministic=True)
    signed = record_pb2.SignedEntry(
        payload=data, public_key=identity.public_key, signature=identity.sign(data)
    )
    return bytes(signed.SerializeToString(deterministic=True))


def sign_record(identity: Identity, record: ServerRecord, key: str) -> bytes:
    """A signed entry carrying a full ServerRecord (see `sign_entry`)."""
    return sign_entry(identity, record, key)


def sign_block_entry(identity: Identity, entry: BlockEntry, key: str) -> bytes:
    """A signed entry carrying a BlockEntry (see `sign_entry`)."""
    return sign_entry(identity, entry, key)


def sign_model_entry(identity: Identity, entry: ModelEntry, key: str) -> bytes:
    """A signed entry carrying a ModelEntry (see `sign_entry`)."""
    return sign_entry(identity, entry, key)


def _check_key(key: str) -> None:
    size = len(key.encode("utf-8"))
    if not 0 < size <= MAX_KEY_BYTES:
        raise RecordRejected(f"DHT key must have 1 to {MAX_KEY_BYTES} bytes, got {size}")


@functools.lru_cache(maxsize=8192)
def _signature_ok(public_key: bytes, payload: bytes, signature: bytes) -> bool:
    # The same entry comes back from every node holding it and on every lookup until
    # its server re-announces: remember the verdict instead of verifying it each time
    # (~60 us each). Bounded: 8192 entries of < 4.2 KB.
    return verify(public_key, payload, signature)


def _parse(raw: bytes) -> tuple[record_pb2.SignedEntry, record_pb2.DhtPayload]:
    try:
        signed = record_pb2.SignedEntry.FromString(raw)
    except DecodeError as e:
        raise RecordRejected(f"entry is not a SignedEntry: {e}") from None
    if not signed.public_key or not signed.signature:
        raise RecordRejected("entry is unsigned")
    if not _signature_ok(bytes(signed.public_key), bytes(signed.payload), bytes(signed.signature)):
        raise RecordRejected("entry signature does not match its payload and public key")
    try:
        payload = record_pb2.DhtPayload.FromString(signed.payload)
    except DecodeError as e:
        raise RecordRejected(f"signed payload is not a DhtPayload: {e}") from None
    return signed, payload


def _body_of(payload: record_pb2.DhtPayload, server_id: str) -> EntryBody:
    which = payload.WhichOneof("body")
    times = (server_id, payload.issued_at, payload.expiration)
    if which == "record":
        return bodies.record_from_proto(payload.record, *times)
    if which == "block":
        return bodies.block_entry_from_proto(payload.block, *times)
    if which == "model":
        return bodies.model_entry_from_proto(payload.model, *times)
    raise RecordRejected("entry carries no body")


def open_entry(
    raw: bytes,
    expected_key: str | None,
    now: float,
    limits: EntryLimits = DEFAULT_ENTRY_LIMITS,
    expected_kind: EntryKind | None = None,
) -> VerifiedEntry:
    """Verifies a serialized SignedEntry from a peer and returns what it says.

    `expected_key=None` skips the key comparison (the DHT compares key digests itself);
    `expected_kind=None` accepts any body. Raises RecordRejected naming the problem:
    oversized, undecodable, unsigned, forged or tampered, wrong key, expired, issued in
    the future, living longer than `limits.max_ttl`, wrong body kind or invalid field.
    """
    if len(raw) > limits.max_entry_bytes:
        raise RecordRejected(f"entry has {len(raw)} bytes, at most {limits.max_entry_bytes} allowed")
    signed, payload = _parse(raw)
    if expected_key is not None and payload.key != expected_key:
        raise RecordRejected(f"entry is for key {payload.key!r}, not {expected_key!r}")
    _check_key(payload.key)
    _check_times(payload.issued_at, payload.expiration)
    if payload.expiration <= now:
        raise RecordRejected(f"entry expired {now - payload.expiration:.1f} s ago")
    if payload.issued_at > now + limits.max_clock_skew:
        raise RecordRejected(f"entry issued {payload.issued_at - now:.1f} s in the future")
    if payload.expiration - payload.issued_at > limits.max_ttl:
        lifetime = payload.expiration - payload.issued_at
        raise RecordRejected(f"entry lives {lifetime:.0f} s, at most {limits.max_ttl:.0f} s allowed")
    body = _body_of(payload, server_id_of(signed.public_key))
    kind = _kind_of(body)
    if kind is not EntryKind.RECORD and len(raw) > limits.max_compact_entry_bytes:
        raise RecordRejected(
            f"{kind.value} entry has {len(raw)} bytes, at most {limits.max_compact_entry_bytes} allowed"
        )
    if expected_kind is not None and kind is not expected_kind:
        raise RecordRejected(
            f"entry carries a {kind.value}, key {payload.key!r} needs a {expected_kind.value}"
        )
    return VerifiedEntry(
        key=payload.key,
        kind=kind,
        server_id=body.server_id,
        public_key=bytes(signed.public_key),
        issued_at=payload.issued_at,
        expiration=payload.expiration,
        body=body,
        raw=raw,
    )


def encode_value(entries: Sequence[bytes]) -> bytes:
    """A serialized DhtValue holding the given serialized SignedEntry messages."""
    value = record_pb2.DhtValue()
    for raw in entries:
        try:
            value.entries.append(record_pb2.SignedEntry.FromString(raw))
        except DecodeError as e:
            raise CodecError(f"not a serialized SignedEntry: {e}") from None
    return bytes(value.SerializeToString(deterministic=True))


def decode_value(data: bytes, limits: EntryLimits = DEFAULT_ENTRY_LIMITS) -> list[bytes]:
    """The serialized SignedEntry messages of a DhtValue (each still to be opened)."""
    if len(data) > limits.max_value_bytes:
        raise CodecError(f"DHT value has {len(data)} bytes, at most {limits.max_value_bytes} allowed")
    try:
        value = record_pb2.DhtValue.FromString(data)
    except DecodeError as e:
        raise CodecError(f"not a DhtValue: {e}") from None
    if len(value.entries) > limits.max_value_entries:
        raise CodecError(
            f"DHT value has {len(value.entries)} entries, at most {limits.max_value_entries} allowed"
        )
    return [entry.SerializeToString(deterministic=True) for entry in value.entries]


def entry_to_message(raw: bytes) -> record_pb2.SignedEntry:
    """The SignedEntry message of serialized bytes (to embed, e.g. in InfoResponse)."""
    message = record_pb2.SignedEntry()
    try:
        message.ParseFromString(raw)
    except DecodeError as e:
        raise CodecError(f"not a serialized SignedEntry: {e}") from None
    return message


def entry_from_message(message: record_pb2.SignedEntry) -> bytes:
    """Serialized bytes of an embedded SignedEntry message (open them with `open_entry`)."""
    return bytes(message.SerializeToString(deterministic=True))
