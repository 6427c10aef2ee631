"""Tuning tensors a server keeps by content digest, so a pass uploads them once.

A training pass sends its deep prompts and LoRA factors with the Forward call and the
matching Backward call refers to them by `digest` (`swarm.tuning.content_digest`). Kept
entries are checked (their digest recomputed from the bytes that came) and copied out of
the request's buffer; the least recently used go when `max_bytes` would be exceeded, and
a client whose reference missed simply sends the tensors again. Pure data, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from swarm.tuning import Tuning


class TuningCache:
    """Tuning by digest, least recently used first out, under a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._entries: OrderedDict[bytes, Tuning] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Tuning | None:
        tuning = self._entries.get(digest)
        if tuning is not None:
            self._entries.move_to_end(digest)
        return tuning

    def put(self, tuning: Tuning) -> None:
        """Keeps a copy of `tuning` (whose `digest` the caller checked) unless it is too big."""
        size = tuning.nbytes()
        if tuning.digest in self._entries or size > self.max_bytes:
            return
        while self.used + size > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self.used -= oldest.nbytes()
        slots = tuning.slots()
        copy = Tuning.from_slots([s for s, _ in slots], [t.detach().clone() for _, t in slots],  # (the request's
                                 tuning.lora_scale)                                                # buffer may go)
        self._entries[tuning.digest] = replace(copy, digest=tuning.digest)
        self.used += size
