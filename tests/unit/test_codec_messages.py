"""Block-service messages and chunked tensor streams round-trip; bad streams are rejected."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest
import torch

from swarm.codec.messages import (
    CHUNK_BYTES,
    decode_forward_call,
    decode_inference_request,
    decode_inference_response,
    decode_tensor_stream,
    encode_forward_call,
    encode_inference_request,
    encode_inference_response,
    encode_tensor_stream,
)
from swarm.errors import CodecError
from swarm.protocol import (
    ForwardCall,
    InferenceClose,
    InferenceOpen,
    InferenceOpened,
    InferenceResult,
    InferenceStep,
)
from swarm.records import BlockRange
from swarm.v1 import block_service_pb2 as pb


async def _aiter(items: Iterable[object]) -> AsyncIterator[object]:
    for item in items:
        yield item


def test_inference_messages_round_trip() -> None:
    open_ = InferenceOpen("m", BlockRange(2, 5), 3, 64, torch.bfloat16, "s1")
    assert decode_inference_request(encode_inference_request(open_)) == open_
    step = InferenceStep(7, torch.randn(3, 2, 8), 4, torch.arange(6).reshape(3, 2),
                         torch.ones(3, 6, dtype=torch.bool))
    back = decode_inference_request(encode_inference_request(step))
    assert isinstance(back, InferenceStep) and back.step_id == 7 and back.start_position == 4
    assert torch.equal(back.hidden_states, step.hidden_states)
    assert back.position_ids is not None and torch.equal(back.position_ids, step.position_ids)
    assert isinstance(decode_inference_request(encode_inference_request(InferenceClose())), InferenceClose)
    result = decode_inference_response(encode_inference_response(InferenceResult(7, torch.ones(1, 1, 4))))
    assert isinstance(result, InferenceResult) and torch.equal(result.hidden_states, torch.ones(1, 1, 4))
    assert decode_inference_response(encode_inference_response(InferenceOpened("id", 9))) == InferenceOpened("id", 9)


def test_empty_or_malformed_inference_messages_are_rejected() -> None:
    with pytest.raises(CodecError, match="no message"):
        decode_inference_request(pb.InferenceRequest())
    with pytest.raises(CodecError, match="no hidden_states"):
        decode_inference_request(pb.InferenceRequest(step=pb.InferenceStep(step_id=1)))
    with pytest.raises(CodecError, match="block range"):
        decode_inference_request(pb.InferenceRequest(open=pb.InferenceOpen(model="m")))


async def test_large_forward_call_streams_in_chunks() -> None:
    hidden = torch.randn(4, 300, 512)  # 2.4 MB: more than one chunk
    mask = torch.ones(4, 300, dtype=torch.int64)
    messages = list(encode_forward_call(ForwardCall("m", BlockRange(0, 3), (hidden, mask))))
    assert len(messages) > 2 and all(len(m.SerializeToString()) <= CHUNK_BYTES + 64 for m in messages)
    call = await decode_forward_call(_aiter(messages))
    assert call.blocks == BlockRange(0, 3) and torch.equal(call.tensors[0], hidden)
    assert torch.equal(call.tensors[1], mask)
    out = await decode_tensor_stream(_aiter(encode_tensor_stream([hidden])))
    assert torch.equal(out[0], hidden)


async def test_truncated_or_overlong_streams_are_rejected() -> None:
    messages = list(encode_forward_call(ForwardCall("m", BlockRange(0, 1), (torch.randn(2, 3, 4),))))
    with pytest.raises(CodecError, match="stream ended after"):
        await decode_forward_call(_aiter(messages[:-1]))
    with pytest.raises(CodecError, match="more bytes"):
        await decode_forward_call(_aiter([*messages, pb.ForwardRequest(chunk=b"x")]))
    with pytest.raises(CodecError, match="must start with an open"):
        await decode_forward_call(_aiter(messages[1:]))
