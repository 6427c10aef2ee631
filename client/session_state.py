"""What an inference session remembers: the inputs that crossed each block boundary, and
the progress of the step in flight (pure data; no network, no asyncio).

A failover replays to a fresh server exactly what crossed the boundary at its first
block: `SessionHistory` keeps those inputs, per boundary, in buffers of the session's
`max_length` (writing a step costs its own size, not the history's). `StepState` is
what the stepping and failover code share about the current step.

Not here: deciding what to replay or when (`client.failover`), sending (`client.inference_session`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from swarm.errors import SwarmError

if TYPE_CHECKING:  # only named in annotations: this module stays free of asyncio
    from client.segments import SegmentStream

KEPT_STEPS = 64
"""Steps whose positions are remembered for late (background) results."""


@dataclass(frozen=True)
class History:
    """Everything that crossed one block boundary: [batch, position, ...] views."""

    hidden: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass(frozen=True)
class StepMeta:
    """Where a step sits in the sequence, and its masks."""

    start: int
    tokens: int
    position_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def wire_masks(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(position_ids, attention_mask) as a step message carries them: none at all when
        they are what a server assumes without them (positions start.. in every row, nothing
        masked). Plain decoding then sends no mask, which grows with the sequence and would
        be encoded, decoded and checked again at every hop of every token."""
        if self._default_layout:
            return None, None
        return self.position_ids, self.attention_mask

    @functools.cached_property
    def _default_layout(self) -> bool:
        positions, mask = self.position_ids, self.attention_mask
        if tuple(positions.shape) != (mask.shape[0], self.tokens) or mask.shape[1] != self.start + self.tokens:
            return False
        if positions.is_cpu and mask.is_cpu and not mask.dtype.is_floating_point:
            # this runs on every token right after the servers' answer, with cold caches: a
            # count and a list compare cost ~13 us where torch's (or numpy's) reductions took ~80
            values = mask.numpy()
            return (np.count_nonzero(values) == values.size
                    and positions.tolist() == [list(range(self.start, self.start + self.tokens))] * mask.shape[0])
        expected = torch.arange(self.start, self.start + self.tokens, device=positions.device)
        return bool(mask.all()) and bool((positions == expected).all())


class BoundaryLog:
    """What crossed one block boundary so far, in buffers of the session's max_length."""

    def __init__(self, batch: int, max_length: int, hidden: int, dtype: torch.dtype) -> None:
        self.hidden = torch.empty(batch, max_length, hidden, dtype=dtype)
        self.position_ids = torch.zeros(batch, max_length, dtype=torch.int64)
        self.attention_mask = torch.zeros(batch, max_length, dtype=torch.int64)

    def write(self, start: int, hidden: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> None:
        """Stores positions start.. of a step (its mask covers 0..end: only the new part is new)."""
        end = start + hidden.shape[1]
        self.hidden[:, start:end] = hidden
        self.position_ids[:, start:end] = positions
        self.attention_mask[:, start:end] = mask[:, start:end]

    def upto(self, length: int) -> History:
        return History(self.hidden[:, :length], self.position_ids[:, :length],
                       self.attention_mask[:, :length])


class SessionHistory:
    """Boundary logs by block index, and the metadata of the last `KEPT_STEPS` steps."""

    def __init__(self, batch: int, max_length: int, dtype: torch.dtype) -> None:
        self.batch, self.max_length, self.dtype = batch, max_length, dtype
        self._logs: dict[int, BoundaryLog] = {}
        self._steps: dict[int, StepMeta] = {}

    def begin_step(self, step_id: int, meta: StepMeta) -> None:
        """Remembers a step's metadata (for its late results), forgetting old steps."""
        self._steps[step_id] = meta
        self._steps.pop(step_id - KEPT_STEPS, None)

    def step_meta(self, step_id: int) -> StepMeta | None:
        return self._steps.get(step_id)

    def record(self, boundary: int, x: torch.Tensor, meta: StepMeta) -> None:
        """Stores a step's hidden states `x` as they crossed block `boundary`."""
        self.log(boundary, x).write(meta.start, x, meta.position_ids, meta.attention_mask)

    def step_input(self, boundary: int, meta: StepMeta) -> torch.Tensor:
        """What the step brought to `boundary` (recorded before)."""
        return self._logs[boundary].hidden[:, meta.start : meta.start + meta.tokens]

    def upto(self, boundary: int, length: int) -> History:
        """The first `length` positions that crossed `boundary`."""
        return self._logs[boundary].upto(length)

    def log(self, boundary: int, like: torch.Tensor) -> BoundaryLog:
        """The log of `boundary`, created (sized like `like`'s hidden size) on first use."""
        log = self._logs.get(boundary)
        if log is None:
            log = self._logs[boundary] = BoundaryLog(self.batch, self.max_length, like.shape[-1], self.dtype)
        return log


@dataclass
class StepState:
    """Progress of the current step."""

    step_id: int
    meta: StepMeta
    done: set[SegmentStream] = field(default_factory=set)
    """Segments that answered this step."""
    failed: dict[SegmentStream, SwarmError] = field(default_factory=dict)
    """Segments that failed and are not replaced yet, with why."""
    suspects: dict[SegmentStream, SwarmError] = field(default_factory=dict)
    """Segments that answered NaN/Inf before their input was known (blamed if it was finite)."""
    forgiven: set[SegmentStream] = field(default_factory=set)
    """Segments whose next NaN/Inf answer is not theirs (the previous server pushed it NaN)."""
    result: torch.Tensor | None = None
    """The last segment's output, once it came."""
    recoveries: int = 0
    """Failovers this step did so far (bounded by max_retries)."""
    verify: bool = False
    """The step is to be spot-checked (`client.verifier`): its copies are not deferred."""
    deferred: bool = False
    """The step went out with `defer_copy`: middle servers may hold their copies (COPY_HOLD_S)."""
