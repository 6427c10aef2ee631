"""Chunked tensor streams of Forward/Backward calls: a header, then the bytes in chunks.

A header (`ForwardOpen` or `TensorStreamHeader`) lists the tensors' dtypes and shapes;
their concatenated bytes follow in chunks of at most CHUNK_BYTES, so that payloads of
any size pass the 4 MB gRPC message cap. The reading side is split in two so that a
server can judge a call by its header before it buffers a single payload byte
(`read_forward_header`, then `read_forward_payload`): the header is checked against the
codec's limits here and against the model by the server. The payload lands in one
buffer of the declared size and the tensors are views of it (no second copy).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import torch

from swarm.codec.limits import TensorLimits
from swarm.codec.tensors import (
    DEFAULT_LIMITS,
    checked_nbytes,
    compression_from_wire,
    compression_to_wire,
    decode_tensor,
    dtype_from_wire,
    encoded,
    tensor_bytes,
)
from swarm.codec.tuning import build_tuning, slots_from_wire, tuning_to_wire
from swarm.errors import CodecError
from swarm.protocol import Compression, ForwardCall, ForwardHeader
from swarm.records import BlockRange
from swarm.tuning import MAX_TUNING_TENSORS
from swarm.v1 import block_service_pb2 as pb
from swarm.v1 import record_pb2, tensor_pb2

CHUNK_BYTES = 1 << 20
"""Largest chunk of a streamed tensor payload (well under gRPC's 4 MB default cap)."""

MAX_STREAM_TENSORS = 4
"""Most tensors one Forward/Backward call may declare."""

MAX_PASS_ID_CHARS = 64
"""Longer pass ids are refused before anything else is read (valid ones have 32)."""


def blocks_from_wire(message: record_pb2.BlockRange) -> BlockRange:
    if message.end <= message.start:
        raise CodecError(f"invalid block range {message.start}:{message.end}")
    return BlockRange(message.start, message.end)


def blocks_to_wire(blocks: BlockRange) -> record_pb2.BlockRange:
    return record_pb2.BlockRange(start=blocks.start, end=blocks.end)


def _chunks(payloads: Sequence[bytes]) -> Iterator[bytes]:
    for payload in payloads:
        raw = memoryview(payload)
        for offset in range(0, len(raw), CHUNK_BYTES):
            yield bytes(raw[offset : offset + CHUNK_BYTES])


def _encoded_all(tensors: Sequence[torch.Tensor], compression: Compression
                 ) -> tuple[list[tensor_pb2.Tensor], list[bytes]]:
    """Headers and payloads of `tensors`, each compressed where it applies."""
    pairs = [encoded(t, compression) for t in tensors]
    return [h for h, _ in pairs], [p for _, p in pairs]


def encode_forward_call(call: ForwardCall, backward: bool = False) -> Iterator[object]:
    """The request messages of a Forward (or Backward) call: open, then chunks."""
    message_type = pb.BackwardRequest if backward else pb.ForwardRequest
    tuning = call.tuning if call.tuning else None
    by_reference = tuning is not None and call.tuning_by_reference
    headers, payloads = _encoded_all(call.tensors, call.compression)
    header = pb.ForwardOpen(
        model=call.model,
        blocks=blocks_to_wire(call.blocks),
        tensors=headers,
        compression=compression_to_wire(call.compression),
        tuning=tuning_to_wire(tuning, with_data=False, by_reference=by_reference) if tuning else None,
        pass_id=call.pass_id,
    )
    yield message_type(open=header)
    sent = tuning.tensors() if tuning and not by_reference else []
    for chunk in _chunks([*payloads, *(tensor_bytes(t) for t in sent)]):
        yield message_type(chunk=chunk)


def encode_tensor_stream(tensors: Sequence[torch.Tensor], backward: bool = False,
                         compression: Compression = Compression.NONE, compressed: int | None = None
                         ) -> Iterator[object]:
    """The response messages carrying tensors: header, then chunks. The first `compressed`
    tensors (all if None) go with `compression` where it applies (tuning gradients do not)."""
    count = len(tensors) if compressed is None else compressed
    headers, payloads = _encoded_all(tensors[:count], compression)
    rest_headers, rest_payloads = _encoded_all(tensors[count:], Compression.NONE)
    message_type = pb.BackwardResponse if backward else pb.ForwardResponse
    yield message_type(header=pb.TensorStreamHeader(tensors=[*headers, *rest_headers]))
    for chunk in _chunks([*payloads, *rest_payloads]):
        yield message_type(chunk=chunk)


def _checked_headers(headers: Sequence[object], limits: TensorLimits,
                     most: int = MAX_STREAM_TENSORS) -> list[int]:
    """Each tensor's byte count; raises CodecError if the headers break the limits."""
    if not 1 <= len(headers) <= most:
        raise CodecError(f"a call carries 1 to {most} tensors, got {len(headers)}")
    sizes = [checked_nbytes(h, limits) for h in headers]  # type: ignore[arg-type]
    if sum(sizes) > limits.max_bytes:
        raise CodecError(f"payload of {sum(sizes)} bytes exceeds the limit of {limits.max_bytes}")
    return sizes


async def _read_payload(iterator: AsyncIterator[object], headers: Sequence[object], sizes: list[int],
                        limits: TensorLimits, what: str) -> tuple[torch.Tensor, ...]:
    total = sum(sizes)
    buffer = bytearray(total)  # the declared size, checked against the limits before this
    view, filled = memoryview(buffer), 0
    async for message in iterator:
        if message.WhichOneof("message") != "chunk":  # type: ignore[attr-defined]
            raise CodecError(f"only chunk messages may follow the {what}")
        chunk = message.chunk  # type: ignore[attr-defined]
        if filled + len(chunk) > total:
            raise CodecError(f"stream sent more bytes than its tensor headers declare ({total})")
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    if filled != total:
        raise CodecError(f"stream ended after {filled} of {total} declared bytes")
    tensors, offset = [], 0
    for header, size in zip(headers, sizes):
        tensors.append(decode_tensor(header, limits, data=view[offset : offset + size]))  # type: ignore[arg-type]
        offset += size
    return tuple(tensors)


@dataclass(frozen=True)
class ForwardOpening:
    """A Forward/Backward request stream whose header has been read, its payload not yet."""

    header: ForwardHeader
    _iterator: AsyncIterator[object]
    _headers: tuple[object, ...]
    _sizes: tuple[int, ...]


async def read_forward_header(
    messages: AsyncIterable[object], limits: TensorLimits = DEFAULT_LIMITS
) -> ForwardOpening:
    """Reads and checks only the first message of a Forward/Backward request stream."""
    iterator: AsyncIterator[object] = aiter(messages)
    first = await anext(iterator, None)
    if first is None or first.WhichOneof("message") != "open":  # type: ignore[attr-defined]
        raise CodecError("a forward/backward call must start with an open message")
    opened = first.open  # type: ignore[attr-defined]
    if not opened.HasField("blocks"):
        raise CodecError("open message has no block range")
    base = tuple(opened.tensors)
    _checked_headers(base, limits)
    slots = slots_from_wire(opened.tuning) if opened.HasField("tuning") else []
    declared = base + tuple(opened.tuning.tensors)
    sizes = _checked_headers(declared, limits, MAX_STREAM_TENSORS + MAX_TUNING_TENSORS)
    by_reference = bool(slots) and opened.tuning.by_reference
    headers = base if by_reference else declared  # what the payload holds
    sizes = sizes[:len(base)] if by_reference else sizes
    metas = tuple(torch.empty(tuple(h.shape), dtype=dtype_from_wire(h.dtype), device="meta") for h in declared)
    has_tuning = bool(slots or opened.tuning.adapter)
    tuning = build_tuning(slots, metas[len(base):], opened.tuning.lora_scale, opened.tuning.adapter,
                          opened.tuning.digest) if has_tuning else None
    if len(opened.pass_id) > MAX_PASS_ID_CHARS:
        raise CodecError(f"pass_id longer than {MAX_PASS_ID_CHARS} characters")
    header = ForwardHeader(opened.model, blocks_from_wire(opened.blocks), metas[:len(base)], sum(sizes), tuning,
                           by_reference, opened.pass_id,
                           compression=compression_from_wire(opened.compression))
    return ForwardOpening(header, iterator, headers, tuple(sizes))


async def read_forward_payload(opening: ForwardOpening, limits: TensorLimits = DEFAULT_LIMITS) -> ForwardCall:
    """Reads the chunks that follow a header read by `read_forward_header`."""
    tensors = await _read_payload(opening._iterator, opening._headers, list(opening._sizes), limits,
                                  "open message")
    count, declared = len(opening.header.tensors), opening.header.tuning
    tuning = declared  # by reference: the declared (meta) tensors, to be resolved by the server
    if declared is not None and not opening.header.tuning_by_reference:
        slots = [slot for slot, _ in declared.slots()]
        tuning = build_tuning(slots, tensors[count:], declared.lora_scale, declared.adapter, declared.digest)
    return ForwardCall(opening.header.model, opening.header.blocks, tensors[:count], tuning,
                       opening.header.tuning_by_reference, opening.header.pass_id,
                       compression=opening.header.compression)


async def decode_forward_call(
    messages: AsyncIterable[object], limits: TensorLimits = DEFAULT_LIMITS
) -> ForwardCall:
    """Reads a whole Forward/Backward request stream into a ForwardCall."""
    return await read_forward_payload(await read_forward_header(messages, limits), limits)


async def decode_tensor_stream(
    messages: AsyncIterable[object], limits: TensorLimits = DEFAULT_LIMITS
) -> tuple[torch.Tensor, ...]:
    """Reads a Forward/Backward response stream into its tensors."""
    iterator: AsyncIterator[object] = aiter(messages)
    first = await anext(iterator, None)
    if first is None or first.WhichOneof("message") != "header":  # type: ignore[attr-defined]
        raise CodecError("a tensor stream must start with a header")
    headers = tuple(first.header.tensors)  # type: ignore[attr-defined]
    sizes = _checked_headers(headers, limits, MAX_STREAM_TENSORS + MAX_TUNING_TENSORS)  # + tuning gradients
    return await _read_payload(iterator, headers, sizes, limits, "header")


async def discard_payload(opening: ForwardOpening, max_bytes: int) -> bool:
    """Reads and drops the chunks after a refused header, at most `max_bytes` in all.

    A gRPC client still writing when the server ends a call sees INTERNAL ("Internal error
    from Core") instead of the server's status: draining a small refused call lets its
    client read why. True if the stream ended within the bound.
    """
    return await discard_stream(opening._iterator, max_bytes)


async def discard_stream(messages: AsyncIterable[object], max_bytes: int) -> bool:
    """Reads and drops what is left of a request stream (e.g. after a header the codec
    refused), at most `max_bytes` of chunks; True if the stream ended within the bound."""
    dropped = 0
    async for message in messages:
        dropped += len(getattr(message, "chunk", b""))
        if dropped > max_bytes:
            return False
    return True
