"""Asynchronous KV-cache reservations: a server-wide budget, a per-peer share, eviction.

A session reserves batch_size x max_length tokens for its lifetime (`reserve`). A peer
(client IP, see `node.limits.peer_of`) may fill the whole budget while nobody else wants
it, but only its share is guaranteed. An open that does not fit waits until enough is
released or the timeout passes, then fails with CacheExhausted saying what it asked for.
While it waits, sessions idle for longer than `evict_idle`, and (for an asker within its
share) sessions of peers over their share that are not computing, are closed if that
makes it fit (`node.limits.cache_victims`): a client that holds the budget and steps
every few seconds cannot keep others out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from node.limits import HeldSession, ShareLedger, cache_victims
from swarm.errors import CacheExhausted

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Lease:
    """A session's reservation; the session marks itself busy/idle and hears of eviction."""

    key: int
    peer: str
    tokens: int
    idle_since: float
    on_evict: Callable[[], None] = field(default=lambda: None)
    evicted: bool = False

    def busy(self) -> None:
        self.idle_since = math.inf

    def idle(self) -> None:
        self.idle_since = asyncio.get_running_loop().time()


class CacheAllocator:
    """Hands out cache tokens to sessions; waits when the budget is full, evicts idle sessions."""

    def __init__(self, total_tokens: int, peer_share: float = 1.0, evict_idle: float = math.inf) -> None:
        if not 0.0 < peer_share <= 1.0:
            raise ValueError(f"peer share must be in (0, 1], got {peer_share}")
        self.ledger = ShareLedger(total_tokens, total_tokens)  # beyond the share is borrowed, not refused
        self.share = int(total_tokens * peer_share)
        self.evict_idle = evict_idle
        self._leases: dict[int, Lease] = {}
        self._keys = itertools.count()
        self._changed = asyncio.Condition()

    @property
    def free(self) -> int:
        return self.ledger.free

    def _evict_for(self, peer: str, tokens: int, now: float) -> None:
        held = [HeldSession(lease.key, lease.peer, lease.tokens, lease.idle_since)
                for lease in self._leases.values() if not lease.evicted]
        for key in cache_victims(self.ledger, held, peer, tokens, now, self.evict_idle, self.share):
            lease = self._leases[key]
            lease.evicted = True
            logger.info("closing a session of %s (holding %d of its %d share, idle for %.1f s): "
                        "%d tokens are wanted by %s", lease.peer, self.ledger.held(lease.peer), self.share,
                        now - lease.idle_since, tokens, peer)
            lease.on_evict()

    async def _wait_for_room(self, peer: str, tokens: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        recheck = min(max(self.evict_idle / 4, 0.05), 0.5)  # idleness grows with time: look again
        while not self.ledger.try_take(peer, tokens):
            now = loop.time()
            self._evict_for(peer, tokens, now)
            if now >= deadline:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(deadline - now, recheck))

    @contextlib.asynccontextmanager
    async def reserve(self, tokens: int, timeout: float, who: str = "", peer: str = "") -> AsyncIterator[Lease]:
        """Holds `tokens` for `peer` for the duration of the context."""
        if not self.ledger.fits_ever(tokens):
            raise CacheExhausted(
                f"session {who} asks for {tokens} cache tokens but this server's budget is "
                f"{self.ledger.total} tokens"
            )
        async with self._changed:
            try:
                await self._wait_for_room(peer, tokens, timeout)
            except TimeoutError:
                raise CacheExhausted(
                    f"session {who} asks for {tokens} cache tokens and none came free in {timeout:g} s: "
                    f"{self.ledger.refusal(peer, tokens)}"
                ) from None
        lease = Lease(next(self._keys), peer, tokens, asyncio.get_running_loop().time())
        self._leases[lease.key] = lease
        logger.debug("session %s of %s reserved %d cache tokens (%d free)", who, peer, tokens, self.ledger.free)
        try:
            yield lease
        finally:
            del self._leases[lease.key]
            async with self._changed:
                self.ledger.release(peer, tokens)
                self._changed.notify_all()
