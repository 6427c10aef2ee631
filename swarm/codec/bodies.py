"""Record bodies: `ServerRecord`, `BlockEntry`, `ModelEntry` to protobuf and back, validated.

Every field is checked both when encoding (so a server never signs what peers would
reject) and when decoding (the bytes come from untrusted peers): string lengths and
characters, "host:port" addresses, valid block ranges, known states and dtypes, finite
non-negative speeds, at most `MAX_NEXT_HOPS` next-hop latencies keyed by server ids.
Failures raise `RecordRejected` saying which field is wrong.

The limits below are part of the contract: they bound the size of every entry, which in
turn bounds DHT requests (< 8 KB) and answers (one UDP datagram); see `swarm.dht.config`.
Signing, keys and expiry are `swarm.codec.entries`' business, not this module's.
"""

from __future__ import annotations

import math

from swarm.errors import RecordRejected
from swarm.identity import is_server_id
from swarm.records import (
    MAX_NEXT_HOPS,
    BlockEntry,
    BlockRange,
    ModelEntry,
    ServerRecord,
    ServerState,
    Throughput,
)
from swarm.v1 import record_pb2, tensor_pb2

MAX_MODEL_NAME_BYTES = 128
"""Longest model name (UTF-8 bytes), e.g. "meta-llama/Llama-3.1-405B-Instruct"."""
MAX_ADDRESS_BYTES = 128
"""Longest "host:port" address (UTF-8 bytes)."""
MAX_VERSION_BYTES = 32
"""Longest software version string."""
MAX_QUANTIZATION_BYTES = 16
"""Longest quantization name ("none", "int8", "nf4", or a future short name)."""
MAX_NUM_BLOCKS = 1 << 16
"""Most transformer blocks a model may have (block indices stay below this)."""
MAX_HIDDEN_SIZE = 1 << 20
"""Largest hidden size a record may state."""
MAX_TOKENS = 1 << 48
"""Largest token count (cache sizes) a record may state."""
MAX_SPEED = 1e12
"""Largest speed (tokens/s) or latency (ms) a record may state; keeps float32 finite."""

_QUANTIZATION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
MAX_ADAPTERS = 8
"""Most served adapters a record may list (with names at their limit: ~0.5 KB more)."""


def check_adapter_name(name: str) -> None:
    """Raises RecordRejected unless `name` is 1..64 characters of [A-Za-z0-9._-]."""
    if not (0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)):
        raise RecordRejected(f"adapter name {name!r} must be 1..64 characters of [A-Za-z0-9._-]")


def _check_text(field: str, text: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8"))
    if not 0 < size <= max_bytes:
        raise RecordRejected(f"{field} must have 1 to {max_bytes} bytes, got {size}")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise RecordRejected(f"{field} {text!r} holds whitespace or unprintable characters")


def check_model_name(model: str) -> None:
    """Raises RecordRejected unless `model` is a valid model name."""
    _check_text("model name", model, MAX_MODEL_NAME_BYTES)


def check_address(address: str) -> None:
    """Raises RecordRejected unless `address` is "host:port" with a port in 1..65535."""
    _check_text("address", address, MAX_ADDRESS_BYTES)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RecordRejected(f"address {address!r} is not host:port with a port in 1..65535")


def _check_speed(field: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= MAX_SPEED):
        raise RecordRejected(f"{field} must be finite, >= 0 and <= {MAX_SPEED:g}, got {value}")


def _check_count(field: str, value: int, limit: int) -> None:
    if not 0 <= value <= limit:
        raise RecordRejected(f"{field} must be in 0..{limit}, got {value}")


def _check_blocks(blocks: BlockRange, num_blocks: int) -> None:
    if blocks.end > MAX_NUM_BLOCKS:
        raise RecordRejected(f"block range {blocks} ends past {MAX_NUM_BLOCKS}")
    if num_blocks and blocks.end > num_blocks:
        raise RecordRejected(f"block range {blocks} ends past the model's {num_blocks} blocks")


def _check_state(state: int) -> ServerState:
    try:
        return ServerState(state)
    except ValueError:
        raise RecordRejected(f"unknown server state {state}") from None


def check_record(record: ServerRecord) -> None:
    """Raises RecordRejected if any field of `record` is invalid."""
    check_address(record.address)
    check_model_name(record.model)
    _check_count("model_num_blocks", record.model_num_blocks, MAX_NUM_BLOCKS)
    _check_count("hidden_size", record.hidden_size, MAX_HIDDEN_SIZE)
    _check_blocks(record.blocks, record.model_num_blocks)
    _check_state(record.state)
    for name in ("inference_tokens_per_s", "forward_tokens_per_s", "network_tokens_per_s"):
        _check_speed(name, getattr(record.throughput, name))
    _check_count("free_cache_tokens", record.free_cache_tokens, MAX_TOKENS)
    _check_count("cache_tokens", record.cache_tokens, MAX_TOKENS)
    _dtype_to_wire(record.dtype)
    _check_text("quantization", record.quantization, MAX_QUANTIZATION_BYTES)
    if not set(record.quantization) <= _QUANTIZATION_CHARS:
        raise RecordRejected(f"quantization {record.quantization!r} must be lowercase [a-z0-9_-]")
    if record.version:
        _check_text("version", record.version, MAX_VERSION_BYTES)
    if len(record.next_hop_rtt_ms) > MAX_NEXT_HOPS:
        raise RecordRejected(
            f"record has {len(record.next_hop_rtt_ms)} next-hop latencies, at most {MAX_NEXT_HOPS} allowed"
        )
    for peer, rtt in record.next_hop_rtt_ms.items():
        if not is_server_id(peer):
            raise RecordRejected(f"next-hop key {peer!r} is not a server id")
        _check_speed("next-hop latency", rtt)
    if len(record.adapters) > MAX_ADAPTERS or len(set(record.adapters)) != len(record.adapters):
        raise RecordRejected(f"a record lists at most {MAX_ADAPTERS} distinct adapters, got {list(record.adapters)}")
    for name in record.adapters:
        check_adapter_name(name)


def check_block_entry(entry: BlockEntry) -> None:
    """Raises RecordRejected if any field of `entry` is invalid."""
    check_address(entry.address)
    _check_blocks(entry.blocks, 0)
    _check_state(entry.state)
    _check_speed("inference_tokens_per_s", entry.inference_tokens_per_s)
    _check_speed("forward_tokens_per_s", entry.forward_tokens_per_s)
    _check_speed("network_tokens_per_s", entry.network_tokens_per_s)
    _check_count("free_cache_tokens", entry.free_cache_tokens, MAX_TOKENS)


def check_model_entry(entry: ModelEntry) -> None:
    """Raises RecordRejected if any field of `entry` is invalid."""
    check_model_name(entry.model)
    if not 0 < entry.num_blocks <= MAX_NUM_BLOCKS:
        raise RecordRejected(f"num_blocks must be in 1..{MAX_NUM_BLOCKS}, got {entry.num_blocks}")
    _check_count("hidden_size", entry.hidden_size, MAX_HIDDEN_SIZE)


def _dtype_to_wire(name: str) -> int:
    try:
        number = int(tensor_pb2.DType.Value("DTYPE_" + name.upper()))
    except ValueError:
        raise RecordRejected(f"unknown dtype {name!r}") from None
    if number == tensor_pb2.DTYPE_UNSPECIFIED:
        raise RecordRejected("dtype is not set")
    return number


def _dtype_from_wire(number: int) -> str:
    if number == tensor_pb2.DTYPE_UNSPECIFIED:
        raise RecordRejected("dtype is not set")
    try:
        return str(tensor_pb2.DType.Name(number)).removeprefix("DTYPE_").lower()
    except ValueError:
        raise RecordRejected(f"unknown dtype {number}") from None


def _range_from_wire(message: record_pb2.BlockRange) -> BlockRange:
    try:
        return BlockRange(message.start, message.end)
    except ValueError as e:
        raise RecordRejected(str(e)) from None


def record_to_proto(record: ServerRecord) -> record_pb2.ServerRecord:
    """A validated ServerRecord message (server id and times travel outside it)."""
    check_record(record)
    return record_pb2.ServerRecord(
        address=record.address,
        model=record.model,
        blocks=record_pb2.BlockRange(start=record.blocks.start, end=record.blocks.end),
        state=int(record.state),  # type: ignore[arg-type]  # enum numbers match the proto
        throughput=record_pb2.Throughput(
            inference_tokens_per_s=record.throughput.inference_tokens_per_s,
            forward_tokens_per_s=record.throughput.forward_tokens_per_s,
            network_tokens_per_s=record.throughput.network_tokens_per_s,
        ),
        free_cache_tokens=record.free_cache_tokens,
        cache_tokens=record.cache_tokens,
        dtype=_dtype_to_wire(record.dtype),  # type: ignore[arg-type]
        quantization=record.quantization,
        version=record.version,
        next_hop_rtt_ms=dict(record.next_hop_rtt_ms),
        model_num_blocks=record.model_num_blocks,
        hidden_size=record.hidden_size,
        adapters=list(record.adapters),
    )


def record_from_proto(
    message: record_pb2.ServerRecord, server_id: str, issued_at: float, expiration: float
) -> ServerRecord:
    """A validated ServerRecord from its message; raises RecordRejected."""
    tp = message.throughput
    record = ServerRecord(
        server_id=server_id,
        address=message.address,
        model=message.model,
        blocks=_range_from_wire(message.blocks),
        state=_check_state(message.state),
        throughput=Throughput(tp.inference_tokens_per_s, tp.forward_tokens_per_s, tp.network_tokens_per_s),
        free_cache_tokens=message.free_cache_tokens,
        cache_tokens=message.cache_tokens,
        dtype=_dtype_from_wire(message.dtype),
        quantization=message.quantization,
        version=message.version,
        next_hop_rtt_ms=dict(message.next_hop_rtt_ms),
        model_num_blocks=message.model_num_blocks,
        hidden_size=message.hidden_size,
        issued_at=issued_at,
        expiration=expiration,
        adapters=tuple(message.adapters),
    )
    check_record(record)
    return record


def block_entry_to_proto(entry: BlockEntry) -> record_pb2.BlockEntry:
    """A validated BlockEntry message."""
    check_block_entry(entry)
    return record_pb2.BlockEntry(
        address=entry.address,
        blocks=record_pb2.BlockRange(start=entry.blocks.start, end=entry.blocks.end),
        state=int(entry.state),  # type: ignore[arg-type]
        inference_tokens_per_s=entry.inference_tokens_per_s,
        forward_tokens_per_s=entry.forward_tokens_per_s,
        free_cache_tokens=entry.free_cache_tokens,
        network_tokens_per_s=entry.network_tokens_per_s,
    )


def block_entry_from_proto(
    message: record_pb2.BlockEntry, server_id: str, issued_at: float, expiration: float
) -> BlockEntry:
    """A validated BlockEntry from its message; raises RecordRejected."""
    entry = BlockEntry(
        server_id=server_id,
        address=message.address,
        blocks=_range_from_wire(message.blocks),
        state=_check_state(message.state),
        inference_tokens_per_s=message.inference_tokens_per_s,
        forward_tokens_per_s=message.forward_tokens_per_s,
        network_tokens_per_s=message.network_tokens_per_s,  # 0 from servers that predate it
        free_cache_tokens=message.free_cache_tokens,
        issued_at=issued_at,
        expiration=expiration,
    )
    check_block_entry(entry)
    return entry


def model_entry_to_proto(entry: ModelEntry) -> record_pb2.ModelEntry:
    """A validated ModelEntry message."""
    check_model_entry(entry)
    return record_pb2.ModelEntry(
        model=entry.model, num_blocks=entry.num_blocks, hidden_size=entry.hidden_size
    )


def model_entry_from_proto(
    message: record_pb2.ModelEntry, server_id: str, issued_at: float, expiration: float
) -> ModelEntry:
    """A validated ModelEntry from its message; raises RecordRejected."""
    entry = ModelEntry(
        server_id=server_id,
        model=message.model,
        num_blocks=message.num_blocks,
        hidden_size=message.hidden_size,
        issued_at=issued_at,
        expiration=expiration,
    )
    check_model_entry(entry)
    return entry
