"""KV-cache budget accounting in tokens (pure: no clocks, no asyncio).

A session reserves batch_size x max_length tokens when it opens and releases them when
it closes. `node.allocator` wraps this with asynchronous waiting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CacheBudget:
    """Tokens of KV cache the server may hold for all sessions together."""

    total: int
    used: int = 0

    def __post_init__(self) -> None:
        if self.total < 0:
            raise ValueError(f"cache budget must be >= 0 tokens, got {self.total}")

    @property
    def free(self) -> int:
        return self.total - self.used

    def fits_ever(self, tokens: int) -> bool:
        """Whether a request of this size could fit once every other session closes."""
        return 0 < tokens <= self.total

    def try_reserve(self, tokens: int) -> bool:
        """Reserves `tokens` if they are free now; True on success."""
        if tokens <= 0:
            raise ValueError(f"a reservation needs a positive number of tokens, got {tokens}")
        if tokens > self.free:
            return False
        self.used += tokens
        return True

    def release(self, tokens: int) -> None:
        if not 0 < tokens <= self.used:
            raise ValueError(f"cannot release {tokens} tokens, {self.used} are reserved")
        self.used -= tokens
