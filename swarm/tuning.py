"""Client-owned trainable tensors that servers apply to their frozen blocks (fine-tuning).

A `Tuning` holds, per absolute block index:

- a deep prompt `[batch or 1, prefix, hidden]`, added to the hidden states of the
  sequence's first `prefix` positions as they enter that block (deep prompt tuning);
- LoRA factors per target projection (a Linear inside the block, named by its path in
  the layer, e.g. "self_attn.q_proj"): A `[r, in]` and B `[out, r]`; the projection
  computes `W x + scale * B (A x)` with `scale = lora_alpha / r`.

On the wire the tensors travel with the call's payload, each described by a `TuningSlot`
(block, kind, target) in a canonical order (`slots`), so the header alone tells a
server how many bytes follow and what each tensor claims to be. Backward returns one
gradient per slot in the same order.

Pure data: checking slots against a model's blocks and projections is the server's job
(`swarm.model.families.tuning`); the codec checks sizes.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from swarm.records import BlockRange

MAX_TUNING_TENSORS = 2048
"""Most tuning tensors one call may carry (e.g. 80 blocks x (1 prompt + 2 x 8 projections)
fits): bounds the header a server must read before it can judge a call."""
MAX_LORA_RANK = 256
"""Highest LoRA rank accepted."""
MAX_PROMPT_TOKENS = 1024
"""Longest deep prompt accepted."""


class SlotKind(enum.IntEnum):
    """What one tuning tensor is (values are the wire's)."""

    PROMPT = 1
    LORA_A = 2
    LORA_B = 3


@dataclass(frozen=True, order=True)
class TuningSlot:
    """Where one tuning tensor goes: its block, kind and (for LoRA) target projection."""

    block: int
    kind: SlotKind
    target: str = ""


@dataclass(frozen=True)
class Tuning:
    """Deep prompts and LoRA factors for some blocks (absolute indices)."""

    prompts: dict[int, torch.Tensor] = field(default_factory=dict)
    lora: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """(block, target) -> (A [r, in], B [out, r])."""
    lora_scale: float = 1.0
    adapter: str = ""
    """The name of a LoRA adapter the server holds (`swarm-node start --adapter`), instead of
    tensors: the server applies its own copy (no tensors may come with a name)."""
    digest: bytes = b""
    """`content_digest` of these tensors when the sender computed it: a server keeps tensors
    it received under their digest, so a later call of the same pass (the Backward after a
    Forward) refers to them instead of uploading them again."""

    def __bool__(self) -> bool:
        return bool(self.prompts or self.lora or self.adapter)

    def blocks(self) -> set[int]:
        return set(self.prompts) | {block for block, _ in self.lora}

    def restricted(self, blocks: BlockRange) -> Tuning:
        """The part of this tuning that concerns `blocks`."""
        return Tuning({b: p for b, p in self.prompts.items() if blocks.start <= b < blocks.end},
                      {k: v for k, v in self.lora.items() if blocks.start <= k[0] < blocks.end}, self.lora_scale,
                      self.adapter)  # (no digest: the content changed)

    def slots(self) -> list[tuple[TuningSlot, torch.Tensor]]:
        """Every tensor with its slot, in the canonical (sorted) order of the wire."""
        flat = [(TuningSlot(b, SlotKind.PROMPT), p) for b, p in self.prompts.items()]
        for (block, target), (a, b) in self.lora.items():
            flat += [(TuningSlot(block, SlotKind.LORA_A, target), a), (TuningSlot(block, SlotKind.LORA_B, target), b)]
        return sorted(flat, key=lambda item: item[0])

    def tensors(self) -> list[torch.Tensor]:
        return [tensor for _, tensor in self.slots()]

    @staticmethod
    def from_slots(slots: Sequence[TuningSlot], tensors: Iterable[torch.Tensor], lora_scale: float) -> Tuning:
        """The inverse of `slots()`; ValueError if a slot repeats or a LoRA pair is incomplete."""
        prompts: dict[int, torch.Tensor] = {}
        halves: dict[tuple[int, str], dict[SlotKind, torch.Tensor]] = {}
        tensors = list(tensors)
        if len(tensors) != len(slots):
            raise ValueError(f"{len(slots)} tuning slots but {len(tensors)} tensors")
        if len(set(slots)) != len(slots):
            raise ValueError("a tuning slot is listed twice")
        for slot, tensor in zip(slots, tensors):
            if slot.kind is SlotKind.PROMPT:
                if slot.target:
                    raise ValueError(f"a prompt slot names no target, got {slot.target!r}")
                prompts[slot.block] = tensor
            else:
                halves.setdefault((slot.block, slot.target), {})[slot.kind] = tensor
        lora = {}
        for key, pair in halves.items():
            if set(pair) != {SlotKind.LORA_A, SlotKind.LORA_B}:
                raise ValueError(f"LoRA factors of block {key[0]} {key[1]!r} need both A and B")
            lora[key] = (pair[SlotKind.LORA_A], pair[SlotKind.LORA_B])
        return Tuning(prompts, lora, lora_scale)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def content_digest(tuning: Tuning) -> bytes:
    """SHA-256 of the tuning's scale, slots, dtypes, shapes and bytes (32 bytes)."""
    digest = hashlib.sha256(struct.pack("<d", tuning.lora_scale))
    for slot, tensor in tuning.slots():
        digest.update(f"{slot.block}/{int(slot.kind)}/{slot.target}/{tensor.dtype}/{list(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()
