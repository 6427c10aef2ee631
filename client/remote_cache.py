"""The cache object transformers' generation loop holds: a KV-cache session on the swarm.

transformers' `generate` keeps a `past_key_values` object between forward calls, asks it
for its length and, in beam search, reorders its rows. `RemoteCache` answers those calls
for a server-side session: each forward sends only the new tokens as one session step.

Beam search reorders rows, and servers cannot copy one row's KV cache to another. So the
cache remembers the token ids (and positions) each row holds; a reorder finds the first
column where any row changes and the next step rewinds the session there and resends
the reordered rows' tokens from that column on, together with the new token. Beams of
one prompt share it, so only generated tokens are replayed: one step (one round trip)
per token still, with up to `new tokens x beams` replayed tokens of compute per step.

A trainable prefix (prompt tuning: `prefix` embeddings before every sequence) lives only
in the session: the cache counts positions as transformers does (without it) and shifts
what it sends by the prefix's length, which goes first in the session's first step.

What this module does not do: choose tokens, or anything transformers' loop does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from client.session_handle import InferenceSession


class RemoteCache:
    """`past_key_values` for transformers' loop, backed by an `InferenceSession`.

    `open_session(rows, max_length)` makes the session on first use (None: `session` is
    given and already open). `ids`/`positions` [rows, held] are what the session holds.
    `prefix` [1, P, hidden]: embeddings the session holds before every row's tokens.
    """

    is_compileable = False  # transformers asks before it considers torch.compile
    is_croppable = False

    def __init__(self, session: InferenceSession | None = None,
                 open_session: Callable[[int, int], InferenceSession] | None = None,
                 ids: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                 prefix: torch.Tensor | None = None) -> None:
        self.session = session
        self._open_session = open_session
        self._stack = contextlib.ExitStack()
        self.ids = ids if ids is not None else torch.zeros(0, 0, dtype=torch.long)
        self.positions = positions if positions is not None else torch.zeros(0, 0, dtype=torch.long)
        self.attention_mask: torch.Tensor | None = None  # [rows, held] as last sent; None: all ones
        self._rewind_to: int | None = None
        self.prefix = prefix
        self.offset = prefix.shape[1] if prefix is not None else 0
        """Session positions before transformers' first (the prefix's)."""
        self.max_length = 0
        """Tokens per row the session must hold (set by the model before the first step)."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens per row the session holds (transformers slices new input ids with it)."""
        return int(self.ids.shape[1])

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Row i now continues row beam_idx[i]: replayed from their first difference on."""
        reordered = self.ids[beam_idx.to(self.ids.device)]
        differs = (reordered != self.ids).any(dim=0).nonzero()
        if differs.numel():
            first = int(differs[0])
            self._rewind_to = first if self._rewind_to is None else min(first, self._rewind_to)
        self.ids = reordered
        self.positions = self.positions[beam_idx.to(self.positions.device)]

    def crop(self, length: int) -> None:
        """Forgets positions >= `length` (rejected drafts): the next step starts there, which
        drops them from the servers' caches (`start_position`)."""
        if not 0 <= length <= self.get_seq_length():
            raise ValueError(f"cannot crop a cache of {self.get_seq_length()} tokens to {length}")
        self.ids = self.ids[:, :length]
        self.positions = self.positions[:, :length]
        if self._rewind_to is not None:
            self._rewind_to = min(self._rewind_to, length)

    def step(self, embed: Callable[[torch.Tensor], torch.Tensor], input_ids: torch.Tensor,
             position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Sends new tokens (after any replay); returns hidden states of the new tokens.

        `attention_mask` [rows, held + new] covers all tokens, as transformers passes it.
        """
        held = self.get_seq_length()
        new = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(held, held + new).expand(input_ids.shape[0], new)
        start = held if self._rewind_to is None else self._rewind_to
        ids = torch.cat([self.ids[:, start:], input_ids.to(self.ids.device)], dim=1) if held else input_ids
        positions = torch.cat([self.positions[:, start:], position_ids.to(self.positions.device)], dim=1) \
            if held else position_ids
        session = self._session_for(input_ids.shape[0])
        rewind = start + self.offset if start + self.offset < session.position else None
        hidden, sent_positions, sent_mask = self._shifted(session, embed(ids), positions, attention_mask)
        out = session.step(hidden, sent_positions, sent_mask, start_position=rewind)
        self.ids = torch.cat([self.ids[:, :start], ids], dim=1) if held else ids.clone()
        self.positions = torch.cat([self.positions[:, :start], positions], dim=1) if held else positions.clone()
        self.attention_mask = attention_mask
        self._rewind_to = None
        return out[:, -new:]

    def _shifted(self, session: InferenceSession, hidden: torch.Tensor, positions: torch.Tensor,
                 mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A step in the session's positions: after the prefix, which the first step carries."""
        if self.prefix is None:
            return hidden, positions, mask
        rows = hidden.shape[0]
        if mask is not None:
            mask = torch.cat([mask.new_ones(rows, self.offset), mask], dim=1)
        positions = positions + self.offset
        if session.position == 0:
            prefix = self.prefix.to(hidden.dtype).expand(rows, -1, -1)
            hidden = torch.cat([prefix, hidden], dim=1)
            positions = torch.cat([torch.arange(self.offset).expand(rows, -1), positions], dim=1)
        return hidden, positions, mask

    def held_mask(self) -> torch.Tensor:
        """The attention mask of the tokens the session holds [rows, held]."""
        if self.attention_mask is None:
            return torch.ones_like(self.ids)
        return self.attention_mask[:, : self.get_seq_length()].long()

    def close(self) -> None:
        """Closes the session if this cache opened it."""
        self._stack.close()

    def _session_for(self, rows: int) -> InferenceSession:
        if self.session is None:
            if self._open_session is None:
                raise RuntimeError("RemoteCache has neither a session nor a way to open one")
            self.session = self._stack.enter_context(self._open_session(rows, self.max_length))
        return self.session
