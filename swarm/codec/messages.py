"""Block-service messages: `swarm.protocol` dataclasses to protobuf and back.

Also the chunked tensor streams of Forward/Backward: a header with tensor shapes, then
the concatenated bytes in chunks of at most CHUNK_BYTES, so that payloads of any size
pass the 4 MB gRPC message cap. Everything decoded is validated (dtypes, shapes, byte
counts, limits) and malformed input raises CodecError.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import torch

from swarm.codec.limits import TensorLimits
from swarm.codec.tensors import (
    DEFAULT_LIMITS,
    checked_nbytes,
    decode_tensor,
    dtype_from_wire,
    dtype_to_wire,
    encode_tensor,
    tensor_bytes,
    tensor_header,
)
from swarm.errors import CodecError
from swarm.protocol import (
    ForwardCall,
    InferenceClose,
    InferenceClosed,
    InferenceOpen,
    InferenceOpened,
    InferenceRequest,
    InferenceResponse,
    InferenceResult,
    InferenceStep,
    NextHop,
    PushedStep,
    ServerInfo,
)
from swarm.records import BlockRange
from swarm.v1 import block_service_pb2 as pb
from swarm.v1 import record_pb2

CHUNK_BYTES = 1 << 20
"""Largest chunk of a streamed tensor payload (well under gRPC's 4 MB default cap)."""

MAX_STREAM_TENSORS = 4
"""Most tensors one Forward/Backward call may declare."""

MAX_NEXT_HOPS = 64
"""Longest chain a step may carry."""

MAX_ID_CHARS = 128
"""Longest session id; longer ones are rejected."""

MAX_ADDRESS_CHARS = 256
"""Longest host:port address."""


def _blocks_from_wire(message: record_pb2.BlockRange) -> BlockRange:
    if message.end <= message.start:
        raise CodecError(f"invalid block range {message.start}:{message.end}")
    return BlockRange(message.start, message.end)


def _blocks_to_wire(blocks: BlockRange) -> record_pb2.BlockRange:
    return record_pb2.BlockRange(start=blocks.start, end=blocks.end)


# ---- Inference -------------------------------------------------------------------


def encode_inference_request(request: InferenceRequest) -> pb.InferenceRequest:
    if isinstance(request, InferenceOpen):
        return pb.InferenceRequest(
            open=pb.InferenceOpen(
                model=request.model,
                blocks=_blocks_to_wire(request.blocks),
                batch_size=request.batch_size,
                max_length=request.max_length,
                dtype=dtype_to_wire(request.dtype),
                session_id=request.session_id,
            )
        )
    if isinstance(request, InferenceStep):
        return pb.InferenceRequest(step=_encode_step(request))
    return pb.InferenceRequest(close=pb.InferenceClose())


def _encode_step(request: InferenceStep) -> pb.InferenceStep:
    step = pb.InferenceStep(
        step_id=request.step_id,
        hidden_states=encode_tensor(request.hidden_states),
        start_position=request.start_position,
        next_hops=[pb.NextHop(address=h.address, session_id=h.session_id) for h in request.next_hops],
    )
    if request.position_ids is not None:
        step.position_ids.CopyFrom(encode_tensor(request.position_ids))
    if request.attention_mask is not None:
        step.attention_mask.CopyFrom(encode_tensor(request.attention_mask))
    return step


def _decode_step(s: pb.InferenceStep, limits: TensorLimits) -> InferenceStep:
    if not s.HasField("hidden_states"):
        raise CodecError("step message has no hidden_states")
    if len(s.next_hops) > MAX_NEXT_HOPS:
        raise CodecError(f"a step may carry at most {MAX_NEXT_HOPS} next hops, got {len(s.next_hops)}")
    for hop in s.next_hops:
        _checked_id(hop.session_id)
        if not 0 < len(hop.address) <= MAX_ADDRESS_CHARS:
            raise CodecError(f"next hop address must have 1..{MAX_ADDRESS_CHARS} characters")
    return InferenceStep(
        step_id=s.step_id,
        hidden_states=decode_tensor(s.hidden_states, limits),
        start_position=s.start_position,
        position_ids=decode_tensor(s.position_ids, limits) if s.HasField("position_ids") else None,
        attention_mask=decode_tensor(s.attention_mask, limits) if s.HasField("attention_mask") else None,
        next_hops=tuple(NextHop(h.address, h.session_id) for h in s.next_hops),
    )


def _checked_id(session_id: str) -> str:
    if len(session_id) > MAX_ID_CHARS:
        raise CodecError(f"session id longer than {MAX_ID_CHARS} characters")
    return session_id


def decode_inference_request(
    message: pb.InferenceRequest, limits: TensorLimits = DEFAULT_LIMITS
) -> InferenceRequest:
    kind = message.WhichOneof("message")
    if kind == "open":
        o = message.open
        if not o.HasField("blocks"):
            raise CodecError("open message has no block range")
        return InferenceOpen(
            model=o.model,
            blocks=_blocks_from_wire(o.blocks),
            batch_size=o.batch_size,
            max_length=o.max_length,
            dtype=dtype_from_wire(o.dtype),
            session_id=_checked_id(o.session_id),
        )
    if kind == "step":
        return _decode_step(message.step, limits)
    if kind == "close":
        return InferenceClose()
    raise CodecError("inference request carries no message")


def encode_inference_response(response: InferenceResponse) -> pb.InferenceResponse:
    if isinstance(response, InferenceOpened):
        return pb.InferenceResponse(
            opened=pb.InferenceOpened(
                server_id=response.server_id,
                reserved_cache_tokens=response.reserved_cache_tokens,
            )
        )
    if isinstance(response, InferenceResult):
        return pb.InferenceResponse(
            result=pb.InferenceResult(
                step_id=response.step_id,
                hidden_states=encode_tensor(response.hidden_states),
                push_failed=response.push_failed,
            )
        )
    return pb.InferenceResponse(closed=pb.InferenceClosed())


def decode_inference_response(
    message: pb.InferenceResponse, limits: TensorLimits = DEFAULT_LIMITS
) -> InferenceResponse:
    kind = message.WhichOneof("message")
    if kind == "opened":
        return InferenceOpened(
            server_id=message.opened.server_id,
            reserved_cache_tokens=message.opened.reserved_cache_tokens,
        )
    if kind == "result":
        return InferenceResult(
            step_id=message.result.step_id,
            hidden_states=decode_tensor(message.result.hidden_states, limits),
            push_failed=message.result.push_failed,
        )
    if kind == "closed":
        return InferenceClosed()
    raise CodecError("inference response carries no message")


# ---- Chunked tensor streams (Forward / Backward) ----------------------------------


def _chunks(tensors: Sequence[torch.Tensor]) -> Iterator[bytes]:
    for tensor in tensors:
        raw = memoryview(tensor_bytes(tensor))
        for offset in range(0, len(raw), CHUNK_BYTES):
            yield bytes(raw[offset : offset + CHUNK_BYTES])


def encode_forward_call(call: ForwardCall, backward: bool = False) -> Iterator[object]:
    """The request messages of a Forward (or Backward) call: open, then chunks."""
    message_type = pb.BackwardRequest if backward else pb.ForwardRequest
    header = pb.ForwardOpen(
        model=call.model,
        blocks=_blocks_to_wire(call.blocks),
        tensors=[tensor_header(t) for t in call.tensors],
    )
    yield message_type(open=header)
    for chunk in _chunks(call.tensors):
        yield message_type(chunk=chunk)


def encode_tensor_stream(tensors: Sequence[torch.Tensor], backward: bool = False) -> Iterator[object]:
    """The response messages carrying tensors: header, then chunks."""
    message_type = pb.BackwardResponse if backward else pb.ForwardResponse
    yield message_type(header=pb.TensorStreamHeader(tensors=[tensor_header(t) for t in tensors]))
    for chunk in _chunks(tensors):
        yield message_type(chunk=chunk)


@dataclass
class _Assembly:
    headers: list[object]
    sizes: list[int]
    buffer: bytearray


def _start_assembly(headers: Sequence[object], limits: TensorLimits) -> _Assembly:
    if not 1 <= len(headers) <= MAX_STREAM_TENSORS:
        raise CodecError(f"a call carries 1 to {MAX_STREAM_TENSORS} tensors, got {len(headers)}")
    sizes = [checked_nbytes(h, limits) for h in headers]  # type: ignore[arg-type]
    if sum(sizes) > limits.max_bytes:
        raise CodecError(f"payload of {sum(sizes)} bytes exceeds the limit of {limits.max_bytes}")
    return _Assembly(list(headers), sizes, bytearray())


def _add_chunk(assembly: _Assembly, chunk: bytes) -> None:
    if len(assembly.buffer) + len(chunk) > sum(assembly.sizes):
        raise CodecError(
            f"stream sent more bytes than its tensor headers declare ({sum(assembly.sizes)})"
        )
    assembly.buffer += chunk


def _finish_assembly(assembly: _Assembly, limits: TensorLimits) -> tuple[torch.Tensor, ...]:
    if len(assembly.buffer) != sum(assembly.sizes):
        raise CodecError(
            f"stream ended after {len(assembly.buffer)} of {sum(assembly.sizes)} declared bytes"
        )
    tensors, offset, view = [], 0, memoryview(assembly.buffer)
    for header, size in zip(assembly.headers, assembly.sizes):
        data = bytes(view[offset : offset + size])
        tensors.append(decode_tensor(header, limits, data=data))  # type: ignore[arg-type]
        offset += size
    return tuple(tensors)


async def decode_forward_call(
    messages: AsyncIterable[object], limits: TensorLimits = DEFAULT_LIMITS
) -> ForwardCall:
    """Reads a whole Forward/Backward request stream into a ForwardCall."""
    iterator: AsyncIterator[object] = aiter(messages)
    first = await anext(iterator, None)
    if first is None or first.WhichOneof("message") != "open":  # type: ignore[attr-defined]
        raise CodecError("a forward/backward call must start with an open message")
    header = first.open  # type: ignore[attr-defined]
    if not header.HasField("blocks"):
        raise CodecError("open message has no block range")
    assembly = _start_assembly(list(header.tensors), limits)
    async for message in iterator:
        if message.WhichOneof("message") != "chunk":  # type: ignore[attr-defined]
            raise CodecError("only chunk messages may follow the open message")
        _add_chunk(assembly, message.chunk)  # type: ignore[attr-defined]
    return ForwardCall(
        model=header.model,
        blocks=_blocks_from_wire(header.blocks),
        tensors=_finish_assembly(assembly, limits),
    )


async def decode_tensor_stream(
    messages: AsyncIterable[object], limits: TensorLimits = DEFAULT_LIMITS
) -> tuple[torch.Tensor, ...]:
    """Reads a Forward/Backward response stream into its tensors."""
    iterator: AsyncIterator[object] = aiter(messages)
    first = await anext(iterator, None)
    if first is None or first.WhichOneof("message") != "header":  # type: ignore[attr-defined]
        raise CodecError("a tensor stream must start with a header")
    assembly = _start_assembly(list(first.header.tensors), limits)  # type: ignore[attr-defined]
    async for message in iterator:
        if message.WhichOneof("message") != "chunk":  # type: ignore[attr-defined]
            raise CodecError("only chunk messages may follow the header")
        _add_chunk(assembly, message.chunk)  # type: ignore[attr-defined]
    return _finish_assembly(assembly, limits)


# ---- Push ------------------------------------------------------------------------


def encode_push(push: PushedStep) -> pb.PushRequest:
    return pb.PushRequest(session_id=push.session_id, step=_encode_step(push.step))


def decode_push(message: pb.PushRequest, limits: TensorLimits = DEFAULT_LIMITS) -> PushedStep:
    if not message.HasField("step"):
        raise CodecError("push carries no step")
    return PushedStep(_checked_id(message.session_id), _decode_step(message.step, limits))


def push_response() -> pb.PushResponse:
    return pb.PushResponse()


# ---- Probe -----------------------------------------------------------------------


def probe_request(size: int) -> pb.ProbeRequest:
    return pb.ProbeRequest(payload=bytes(size))


def probe_response(request: pb.ProbeRequest) -> pb.ProbeResponse:
    return pb.ProbeResponse(received_bytes=len(request.payload))


# ---- Info ------------------------------------------------------------------------


def info_request() -> pb.InfoRequest:
    return pb.InfoRequest()


def encode_info(info: ServerInfo) -> pb.InfoResponse:
    return pb.InfoResponse(
        record=record_pb2.SignedEntry.FromString(info.signed_record),
        active_sessions=info.active_sessions,
        free_cache_tokens=info.free_cache_tokens,
    )


def decode_info(message: pb.InfoResponse) -> ServerInfo:
    return ServerInfo(
        signed_record=message.record.SerializeToString(),
        active_sessions=message.active_sessions,
        free_cache_tokens=message.free_cache_tokens,
    )
