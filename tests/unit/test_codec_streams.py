"""Chunked Forward/Backward streams: the header is judged before any payload byte is read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import torch

from swarm.codec import messages
from swarm.codec.limits import TensorLimits
from swarm.errors import CodecError
from swarm.protocol import ForwardCall
from swarm.records import BlockRange
from swarm.v1 import block_service_pb2 as pb


class _Source:
    """A request stream that counts how many messages were read from it."""

    def __init__(self, items: list[object]) -> None:
        self.items, self.read = items, 0

    async def __aiter__(self) -> AsyncIterator[object]:
        for item in self.items:
            self.read += 1
            yield item


def _declared(shape: list[int]) -> list[object]:
    """A header declaring `shape` float32 and three (unread) chunks."""
    call = ForwardCall("m", BlockRange(0, 1), (torch.zeros(1, 2, 4),))
    first = next(iter(messages.encode_forward_call(call)))
    first.open.tensors[0].ClearField("shape")
    first.open.tensors[0].shape.extend(shape)
    return [first] + [pb.ForwardRequest(chunk=b"\0" * 16)] * 3


def test_header_only_is_read_then_the_payload() -> None:
    async def scenario() -> None:
        call = ForwardCall("m", BlockRange(0, 2), (torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.int64)))
        source = _Source(list(messages.encode_forward_call(call)))
        opening = await messages.read_forward_header(source)
        assert source.read == 1  # nothing but the header so far
        assert opening.header.nbytes == 2 * 3 * 4 * 4 + 2 * 3 * 8
        assert [tuple(t.shape) for t in opening.header.tensors] == [(2, 3, 4), (2, 3)]
        assert all(t.device.type == "meta" for t in opening.header.tensors)
        decoded = await messages.read_forward_payload(opening)
        assert torch.equal(decoded.tensors[0], call.tensors[0]) and torch.equal(decoded.tensors[1], call.tensors[1])

    asyncio.run(scenario())


@pytest.mark.parametrize("shape, match", [
    ([1 << 20, 1 << 10], "needs 4294967296 bytes"),  # 4 GiB declared: refused from the header
    ([-1, 4], "negative dimension"),
])
def test_oversized_or_broken_headers_are_refused_unread(shape: list[int], match: str) -> None:
    async def scenario() -> None:
        source = _Source(_declared(shape))
        with pytest.raises(CodecError, match=match):
            await messages.read_forward_header(source, TensorLimits(max_elements=1 << 40, max_bytes=1 << 30))
        assert source.read == 1

    asyncio.run(scenario())


def test_more_or_fewer_bytes_than_declared() -> None:
    async def scenario(extra: list[object]) -> None:
        call = ForwardCall("m", BlockRange(0, 1), (torch.zeros(1, 2, 4),))
        items = list(messages.encode_forward_call(call))
        await messages.decode_forward_call(_Source(items[:1] + extra))

    with pytest.raises(CodecError, match="more bytes than"):
        asyncio.run(scenario([pb.ForwardRequest(chunk=b"\0" * 33)]))
    with pytest.raises(CodecError, match="ended after 16 of 32"):
        asyncio.run(scenario([pb.ForwardRequest(chunk=b"\0" * 16)]))
