"""Tuning on the wire: round trips of Forward calls and inference opens, and what the codec refuses."""

from __future__ import annotations

import pytest
import torch

from swarm.codec import messages
from swarm.codec.streams import decode_forward_call, encode_forward_call, read_forward_header
from swarm.errors import CodecError
from swarm.protocol import ForwardCall, InferenceOpen
from swarm.records import BlockRange
from swarm.tuning import SlotKind, Tuning, TuningSlot
from swarm.v1 import block_service_pb2 as pb


def _tuning() -> Tuning:
    g = torch.Generator().manual_seed(0)
    return Tuning(prompts={2: torch.randn(1, 3, 8, generator=g)},
                  lora={(1, "self_attn.q_proj"): (torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g)),
                        (2, "mlp.up_proj"): (torch.randn(2, 8, generator=g), torch.randn(16, 2, generator=g))},
                  lora_scale=0.5)


async def _aiter(items: list[object]):  # type: ignore[no-untyped-def]
    for item in items:
        yield item


def _same(a: Tuning, b: Tuning) -> None:
    assert [s for s, _ in a.slots()] == [s for s, _ in b.slots()] and a.lora_scale == b.lora_scale
    for x, y in zip(a.tensors(), b.tensors(), strict=True):
        assert torch.equal(x, y)


async def test_a_forward_call_carries_its_tuning_after_the_tensors() -> None:
    hidden = torch.randn(1, 4, 8)
    call = ForwardCall("m", BlockRange(0, 3), (hidden,), _tuning())
    wire = list(encode_forward_call(call))
    opening = await read_forward_header(_aiter(wire))
    assert opening.header.nbytes == hidden.numel() * 4 + call.tuning.nbytes()  # type: ignore[union-attr]
    assert opening.header.tuning is not None and all(t.is_meta for t in opening.header.tuning.tensors())
    back = await decode_forward_call(_aiter(wire))
    assert torch.equal(back.tensors[0], hidden)
    assert back.tuning is not None
    _same(back.tuning, call.tuning)  # type: ignore[arg-type]


async def test_an_adapter_name_travels_alone() -> None:
    call = ForwardCall("m", BlockRange(0, 3), (torch.zeros(1, 2, 8),), Tuning(adapter="mine"))
    back = await decode_forward_call(_aiter(list(encode_forward_call(call))))
    assert back.tuning is not None and back.tuning.adapter == "mine" and not back.tuning.slots()


def test_an_inference_open_carries_tensors_inline() -> None:
    opening = InferenceOpen("m", BlockRange(0, 3), 1, 16, torch.float32, "a" * 32, "", _tuning())
    back = messages.decode_inference_request(messages.encode_inference_request(opening))
    assert isinstance(back, InferenceOpen) and back.tuning is not None
    _same(back.tuning, opening.tuning)  # type: ignore[arg-type]
    plain = messages.decode_inference_request(messages.encode_inference_request(
        InferenceOpen("m", BlockRange(0, 3), 1, 16, torch.float32, "a" * 32)))
    assert isinstance(plain, InferenceOpen) and plain.tuning is None


def test_restricted_keeps_only_the_blocks_asked() -> None:
    part = _tuning().restricted(BlockRange(2, 3))
    assert set(part.prompts) == {2} and set(part.lora) == {(2, "mlp.up_proj")} and part.lora_scale == 0.5
    assert not Tuning() and Tuning(adapter="x")


@pytest.mark.parametrize("slots, error", [
    ([TuningSlot(0, SlotKind.LORA_A, "q")], "need both A and B"),
    ([TuningSlot(0, SlotKind.PROMPT, "q")], "names no target"),
    ([TuningSlot(0, SlotKind.PROMPT), TuningSlot(0, SlotKind.PROMPT)], "listed twice"),
])
def test_from_slots_refuses(slots: list[TuningSlot], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Tuning.from_slots(slots, [torch.zeros(1)] * len(slots), 1.0)


@pytest.mark.parametrize("header, error", [
    (pb.TuningHeader(slots=[pb.TuningSlot(block=0, kind=7)], tensors=[pb.TuningHeader().tensors.add()]), "kind"),
    (pb.TuningHeader(slots=[pb.TuningSlot(block=0, kind=1)]), "1 tuning slots but 0 tensors"),
    (pb.TuningHeader(adapter="x", slots=[pb.TuningSlot(block=0, kind=1)], tensors=[pb.TuningHeader().tensors.add()]),
     "without tensors"),
    (pb.TuningHeader(lora_scale=float("nan")), "finite"),
])
def test_malformed_headers_are_codec_errors(header: pb.TuningHeader, error: str) -> None:
    from swarm.codec.tuning import slots_from_wire

    with pytest.raises(CodecError, match=error):
        slots_from_wire(header)


async def test_a_reference_by_digest_sends_no_tuning_bytes() -> None:
    from dataclasses import replace

    from swarm.tuning import content_digest

    hidden = torch.randn(1, 4, 8)
    tuning = _tuning()
    tuning = replace(tuning, digest=content_digest(tuning))
    call = ForwardCall("m", BlockRange(0, 3), (hidden, hidden), tuning, tuning_by_reference=True)
    wire = list(encode_forward_call(call, backward=True))
    opening = await read_forward_header(_aiter(wire))
    assert opening.header.nbytes == 2 * hidden.numel() * 4 and opening.header.tuning_by_reference
    back = await decode_forward_call(_aiter(wire))
    assert back.tuning_by_reference and back.tuning is not None and back.tuning.digest == tuning.digest
    assert [s for s, _ in back.tuning.slots()] == [s for s, _ in tuning.slots()]
    assert all(t.is_meta for t in back.tuning.tensors())  # the server fills them in from what it keeps


def test_the_digest_covers_values_shapes_and_scale() -> None:
    from dataclasses import replace

    from swarm.tuning import content_digest

    base = content_digest(_tuning())
    assert content_digest(_tuning()) == base and len(base) == 32
    changed = _tuning()
    changed.prompts[2][0, 0, 0] += 1e-3
    assert content_digest(changed) != base
    assert content_digest(replace(_tuning(), lora_scale=0.25)) != base
    assert content_digest(_tuning().restricted(BlockRange(2, 3))) != base


def test_the_tuning_cache_keeps_recent_entries_within_its_budget() -> None:
    from dataclasses import replace

    from node.tuning_cache import TuningCache
    from swarm.tuning import content_digest

    def entry(seed: int) -> Tuning:
        t = Tuning(prompts={0: torch.full((1, 4, 8), float(seed))})  # 128 bytes
        return replace(t, digest=content_digest(t))

    cache = TuningCache(max_bytes=300)
    first, second, third = entry(1), entry(2), entry(3)
    cache.put(first)
    cache.put(second)
    assert cache.get(first.digest) is not None  # first is now the most recent
    cache.put(third)  # over budget: the least recently used (second) goes
    assert cache.get(second.digest) is None and cache.get(first.digest) is not None and len(cache) == 2
    kept = cache.get(third.digest)
    assert kept is not None and torch.equal(kept.prompts[0], third.prompts[0])
    assert kept.prompts[0].data_ptr() != third.prompts[0].data_ptr()  # a copy, not the request's buffer
    cache.put(Tuning(prompts={0: torch.zeros(1, 100, 8)}, digest=b"x" * 32))  # larger than the budget: not kept
    assert cache.get(b"x" * 32) is None and cache.used <= 300
