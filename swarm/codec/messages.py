"""Block-service messages: `swarm.protocol` dataclasses to protobuf and back.

The chunked tensor streams of Forward/Backward live in `swarm.codec.streams` and are
re-exported here. Everything decoded is validated (dtypes, shapes, byte counts, limits)
and malformed input raises CodecError.
"""

from __future__ import annotations

from swarm.codec.limits import TensorLimits
from swarm.codec.streams import (  # the chunked streams are part of this module's face
    CHUNK_BYTES as CHUNK_BYTES,
    MAX_STREAM_TENSORS as MAX_STREAM_TENSORS,
    ForwardOpening as ForwardOpening,
    blocks_from_wire,
    blocks_to_wire,
    decode_forward_call as decode_forward_call,
    decode_tensor_stream as decode_tensor_stream,
    discard_payload as discard_payload,
    discard_stream as discard_stream,
    encode_forward_call as encode_forward_call,
    encode_tensor_stream as encode_tensor_stream,
    read_forward_header as read_forward_header,
    read_forward_payload as read_forward_payload,
)
from swarm.codec.tensors import (
    DEFAULT_LIMITS,
    compression_from_wire,
    compression_to_wire,
    decode_tensor,
    dtype_from_wire,
    dtype_to_wire,
    encode_tensor_into,
)
from swarm.codec.tuning import tuning_from_wire, tuning_to_wire
from swarm.errors import CodecError
from swarm.protocol import (  # MAX_STEP_HOPS, MAX_RESULTS_BATCH: the codec enforces them
    MAX_RESULTS_BATCH,
    MAX_STEP_HOPS,
    Compression,
    InferenceClose,
    InferenceClosed,
    InferenceOpen,
    InferenceOpened,
    InferenceRequest,
    InferenceResponse,
    InferenceResult,
    InferenceResults,
    InferenceStep,
    NextHop,
    PushedStep,
    ServerInfo,
)
from swarm.v1 import block_service_pb2 as pb
from swarm.v1 import record_pb2

MAX_ID_CHARS = 128
"""Longest session id; longer ones are rejected."""

MAX_ADDRESS_CHARS = 256
"""Longest host:port address."""


# ---- Inference -------------------------------------------------------------------


def encode_inference_request(request: InferenceRequest, compression: Compression = Compression.NONE
                             ) -> pb.InferenceRequest:
    """A request message; a step's hidden states go with `compression` where it applies."""
    if isinstance(request, InferenceOpen):
        return pb.InferenceRequest(
            open=pb.InferenceOpen(
                model=request.model,
                blocks=blocks_to_wire(request.blocks),
                batch_size=request.batch_size,
                max_length=request.max_length,
                dtype=dtype_to_wire(request.dtype),
                session_id=request.session_id,
                push_capability=request.push_capability,
                tuning=tuning_to_wire(request.tuning, with_data=True) if request.tuning else None,
                compression=compression_to_wire(request.compression),
            )
        )
    if isinstance(request, InferenceStep):
        message = pb.InferenceRequest()
        _encode_step(message.step, request, compression)
        return message
    return pb.InferenceRequest(close=pb.InferenceClose())


def _encode_step(step: pb.InferenceStep, request: InferenceStep, compression: Compression) -> None:
    """Fills the (empty) step field of an enclosing message in place: no copies of the
    tensors (a step is encoded at every hop of every token)."""
    step.step_id = request.step_id
    encode_tensor_into(step.hidden_states, request.hidden_states, compression)
    step.start_position = request.start_position
    for hop in request.next_hops:
        step.next_hops.add(address=hop.address, session_id=hop.session_id, capability=hop.capability)
    step.defer_copy = request.defer_copy
    if request.position_ids is not None:
        encode_tensor_into(step.position_ids, request.position_ids)
    if request.attention_mask is not None:
        encode_tensor_into(step.attention_mask, request.attention_mask)


def _decode_step(s: pb.InferenceStep, limits: TensorLimits) -> InferenceStep:
    if not s.HasField("hidden_states"):
        raise CodecError("step message has no hidden_states")
    if len(s.next_hops) > MAX_STEP_HOPS:
        raise CodecError(f"a step may carry at most {MAX_STEP_HOPS} next hops, got {len(s.next_hops)}")
    for hop in s.next_hops:
        _checked_id(hop.session_id)
        _checked_id(hop.capability)
        if not 0 < len(hop.address) <= MAX_ADDRESS_CHARS:
            raise CodecError(f"next hop address must have 1..{MAX_ADDRESS_CHARS} characters")
    return InferenceStep(
        step_id=s.step_id,
        hidden_states=decode_tensor(s.hidden_states, limits),
        start_position=s.start_position,
        position_ids=decode_tensor(s.position_ids, limits) if s.HasField("position_ids") else None,
        attention_mask=decode_tensor(s.attention_mask, limits) if s.HasField("attention_mask") else None,
        next_hops=tuple(NextHop(h.address, h.session_id, h.capability) for h in s.next_hops),
        defer_copy=s.defer_copy,
    )


def _checked_id(session_id: str) -> str:
    if len(session_id) > MAX_ID_CHARS:
        raise CodecError(f"session id or capability longer than {MAX_ID_CHARS} characters")
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
            blocks=blocks_from_wire(o.blocks),
            batch_size=o.batch_size,
            max_length=o.max_length,
            dtype=dtype_from_wire(o.dtype),
            session_id=_checked_id(o.session_id),
            push_capability=_checked_id(o.push_capability),
            tuning=tuning_from_wire(o.tuning, limits) if o.HasField("tuning") else None,
            compression=compression_from_wire(o.compression),
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
        message = pb.InferenceResponse()
        _encode_result(message.result, response)
        return message
    if isinstance(response, InferenceResults):
        if not 0 < len(response.results) <= MAX_RESULTS_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_RESULTS_BATCH} results, not {len(response.results)}")
        message = pb.InferenceResponse()
        batch = message.results.results
        for result in response.results:
            _encode_result(batch.add(), result)
        return message
    return pb.InferenceResponse(closed=pb.InferenceClosed())


def _encode_result(message: pb.InferenceResult, result: InferenceResult) -> None:
    """Fills an empty InferenceResult in place (as `_encode_step`)."""
    message.step_id = result.step_id
    message.push_failed = result.push_failed
    encode_tensor_into(message.hidden_states, result.hidden_states, result.compression)


def _decode_result(result: pb.InferenceResult, limits: TensorLimits) -> InferenceResult:
    return InferenceResult(
        step_id=result.step_id,
        hidden_states=decode_tensor(result.hidden_states, limits),
        push_failed=result.push_failed,
        compression=compression_from_wire(result.hidden_states.compression),
    )


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
        return _decode_result(message.result, limits)
    if kind == "results":
        batch = message.results.results
        if not 0 < len(batch) <= MAX_RESULTS_BATCH:
            raise CodecError(f"a results message holds 1..{MAX_RESULTS_BATCH} results, got {len(batch)}")
        return InferenceResults(tuple(_decode_result(r, limits) for r in batch))
    if kind == "closed":
        return InferenceClosed()
    raise CodecError("inference response carries no message")


# ---- Push ------------------------------------------------------------------------


def encode_push(push: PushedStep) -> pb.PushRequest:
    message = pb.PushRequest(session_id=push.session_id, capability=push.capability)
    _encode_step(message.step, push.step, push.compression)
    return message


def decode_push(message: pb.PushRequest, limits: TensorLimits = DEFAULT_LIMITS) -> PushedStep:
    if not message.HasField("step"):
        raise CodecError("push carries no step")
    return PushedStep(_checked_id(message.session_id), _decode_step(message.step, limits),
                      _checked_id(message.capability),
                      compression=compression_from_wire(message.step.hidden_states.compression))


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
