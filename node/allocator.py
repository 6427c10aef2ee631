"""Asynchronous KV-cache reservations on top of `CacheBudget`.

A session that does not fit waits (first come, first served) until enough is released
or the timeout passes, then fails with CacheExhausted saying what it asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from node.cache_budget import CacheBudget
from swarm.errors import CacheExhausted

logger = logging.getLogger(__name__)


class CacheAllocator:
    """Hands out cache tokens to sessions; waits fairly when the budget is full."""

    def __init__(self, total_tokens: int) -> None:
        self.budget = CacheBudget(total_tokens)
        self._changed = asyncio.Condition()

    @property
    def free(self) -> int:
        return self.budget.free

    @contextlib.asynccontextmanager
    async def reserve(self, tokens: int, timeout: float, who: str = "") -> AsyncIterator[int]:
        """Holds `tokens` for the duration of the context."""
        if not self.budget.fits_ever(tokens):
            raise CacheExhausted(
                f"session {who} asks for {tokens} cache tokens but this server's whole "
                f"budget is {self.budget.total} tokens"
            )
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.budget.try_reserve(tokens)), timeout
                )
            except TimeoutError:
                raise CacheExhausted(
                    f"session {who} asks for {tokens} cache tokens; only {self.budget.free} of "
                    f"{self.budget.total} were free after waiting {timeout:g} s"
                ) from None
        logger.debug("session %s reserved %d cache tokens (%d free)", who, tokens, self.budget.free)
        try:
            yield tokens
        finally:
            async with self._changed:
                self.budget.release(tokens)
                self._changed.notify_all()
