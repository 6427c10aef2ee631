"""`Tuning` (deep prompts, LoRA factors) to and from the wire's `TuningHeader`.

In a Forward/Backward call the header carries only the tensors' dtypes and shapes (their
bytes follow the call's other tensors in the chunks, so the whole payload is sized from
the header); an inference open carries them with their data. Only the structure is
checked here (slot kinds, target names, counts, sizes); whether the blocks and shapes
fit the served model is the server's check (`swarm.model.families.tuning.check_tuning`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from swarm.codec.limits import TensorLimits
from swarm.codec.tensors import DEFAULT_LIMITS, decode_tensor, encode_tensor, tensor_header
from swarm.errors import CodecError
from swarm.tuning import MAX_TUNING_TENSORS, SlotKind, Tuning, TuningSlot
from swarm.v1 import block_service_pb2 as pb

MAX_TARGET_CHARS = 128
"""Longest LoRA target path."""
MAX_BLOCK_INDEX = 1 << 20
MAX_ADAPTER_CHARS = 64
DIGEST_BYTES = 32


def tuning_to_wire(tuning: Tuning, with_data: bool, by_reference: bool = False) -> pb.TuningHeader:
    slots = tuning.slots()
    encode = encode_tensor if with_data else tensor_header
    return pb.TuningHeader(
        slots=[pb.TuningSlot(block=s.block, kind=int(s.kind), target=s.target) for s, _ in slots],
        tensors=[encode(t) for _, t in slots],
        lora_scale=tuning.lora_scale,
        adapter=tuning.adapter,
        digest=tuning.digest,
        by_reference=by_reference,
    )


def slots_from_wire(header: pb.TuningHeader) -> list[TuningSlot]:
    """The header's slots, structurally checked (CodecError otherwise)."""
    if len(header.slots) > MAX_TUNING_TENSORS:
        raise CodecError(f"at most {MAX_TUNING_TENSORS} tuning tensors per call, got {len(header.slots)}")
    if len(header.tensors) != len(header.slots):
        raise CodecError(f"{len(header.slots)} tuning slots but {len(header.tensors)} tensors")
    if not math.isfinite(header.lora_scale):
        raise CodecError("lora_scale must be finite")
    if header.adapter and (header.slots or len(header.adapter) > MAX_ADAPTER_CHARS):
        raise CodecError(f"an adapter name ({MAX_ADAPTER_CHARS} characters at most) comes without tensors")
    if len(header.digest) not in (0, DIGEST_BYTES) or (header.by_reference and not header.digest):
        raise CodecError(f"a tuning digest has {DIGEST_BYTES} bytes, and a reference by digest needs one")
    slots = []
    for slot in header.slots:
        if slot.kind not in {k.value for k in SlotKind}:
            raise CodecError(f"tuning slot kind must be 1 (prompt), 2 (LoRA A) or 3 (LoRA B), got {slot.kind}")
        if slot.block >= MAX_BLOCK_INDEX or len(slot.target) > MAX_TARGET_CHARS:
            raise CodecError(f"tuning slot block {slot.block} or target of {len(slot.target)} characters too large")
        slots.append(TuningSlot(slot.block, SlotKind(slot.kind), slot.target))
    if slots != sorted(slots) or len(set(slots)) != len(slots):
        raise CodecError("tuning slots must be sorted by (block, kind, target), each once")
    return slots


def build_tuning(slots: Sequence[TuningSlot], tensors: Sequence[torch.Tensor], lora_scale: float,
                 adapter: str = "", digest: bytes = b"") -> Tuning:
    try:
        return replace(Tuning.from_slots(slots, tensors, lora_scale), adapter=adapter, digest=digest)
    except ValueError as error:
        raise CodecError(f"tuning: {error}") from None


def tuning_from_wire(header: pb.TuningHeader, limits: TensorLimits = DEFAULT_LIMITS) -> Tuning:
    """A tuning whose tensors came with their data (an inference open)."""
    slots = slots_from_wire(header)
    tensors = [decode_tensor(t, limits) for t in header.tensors]
    if sum(t.numel() * t.element_size() for t in tensors) > limits.max_bytes:
        raise CodecError(f"tuning tensors exceed {limits.max_bytes} bytes")
    if header.by_reference:
        raise CodecError("a session's tuning comes with its tensors (by_reference is for Forward/Backward calls)")
    return build_tuning(slots, tensors, header.lora_scale, header.adapter, header.digest)
