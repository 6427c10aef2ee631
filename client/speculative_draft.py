"""Drafting for speculative decoding: guesses of the next tokens that cost no model.

Prompt lookup (n-gram drafting): when the last n tokens of the text so far occurred
earlier (in the prompt or in what was generated), the tokens that followed that earlier
occurrence are a cheap guess of what comes next. Code editing, extraction, summaries
that quote, and chat turns that repeat names all copy long runs this way. The longest
n-gram that matches wins (longer contexts guess better), and among its occurrences the
most recent one (nearby text is the best predictor of the next tokens).

`DraftLength` adapts how many tokens to draft: all accepted -> try more, any rejected
-> try fewer, so text that does not copy costs little extra compute on the servers.

Pure: lists of ints in, lists of ints out; no model, no torch, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_NGRAM = 3
"""Longest suffix looked up (longer ones rarely match where shorter ones would not)."""


@dataclass(frozen=True)
class PromptLookupDrafter:
    """Proposes the tokens that followed the latest earlier occurrence of the text's suffix."""

    max_ngram: int = MAX_NGRAM
    min_ngram: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {self.min_ngram}, {self.max_ngram}")

    def draft(self, tokens: Sequence[int], count: int) -> list[int]:
        """Up to `count` tokens guessed to follow `tokens` ([] when no suffix recurs)."""
        if count <= 0:
            return []
        length = len(tokens)
        for n in range(min(self.max_ngram, length - 1), self.min_ngram - 1, -1):
            suffix = list(tokens[length - n:])
            # latest earlier occurrence first; it may overlap the suffix (a run "a a a" drafts "a")
            for start in range(length - n - 1, -1, -1):
                if list(tokens[start:start + n]) == suffix:
                    return list(tokens[start + n:start + n + count])
        return []


@dataclass
class DraftLength:
    """How many tokens the next step drafts: grows by 2 while drafts are wholly accepted,
    shrinks by 1 (not below 1) on any rejection (the heuristic transformers uses)."""

    most: int
    current: int = 0

    def __post_init__(self) -> None:
        if self.most < 1:
            raise ValueError(f"draft length must be >= 1, got {self.most}")
        self.current = self.current or self.most

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return  # nothing was tried: nothing learned
        if accepted == drafted:
            self.current = min(self.most, self.current + 2)
        else:
            self.current = max(1, self.current - 1)
