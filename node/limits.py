"""Pure accounting of what clients may hold on a server: shares per peer, idle victims.

A "peer" is the IP address a call comes from (`peer_of(context.peer())`), not the
connection: one client can open any number of connections (each with its own port), so
per-connection limits cost an attacker nothing, while addresses cost something. Clients
behind one NAT share a peer's allowance; that is the price of the rule.

- `ShareLedger`: amounts held now under a server-wide cap and a per-peer cap (bytes of
  requests being received; KV-cache tokens, whose per-peer cap is the total). Take or
  refuse, never wait.
- `cache_victims`: which sessions to close so that a waiting open fits: stale ones, and
  room borrowed beyond a peer's share.

No clocks, no asyncio: callers pass times in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from swarm.errors import CacheExhausted


def peer_of(grpc_peer: str) -> str:
    """The IP address in a gRPC peer string ("ipv4:1.2.3.4:5678", "ipv6:[::1]:5678", ...)."""
    kind, _, rest = grpc_peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].removeprefix("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return grpc_peer  # unix sockets and the like: the whole string


@dataclass
class ShareLedger:
    """Amounts held now, under a total and a per-peer cap."""

    total: int
    per_peer: int
    used: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.total < 0 or self.per_peer < 0:
            raise ValueError(f"caps must be >= 0, got total {self.total}, per peer {self.per_peer}")

    @property
    def free(self) -> int:
        return self.total - self.used

    def held(self, peer: str) -> int:
        return self.by_peer.get(peer, 0)

    def refusal(self, peer: str, amount: int) -> str | None:
        """Why `amount` cannot be taken for `peer` now (None: it can)."""
        if amount > self.free:
            return f"{amount} asked, {self.free} of {self.total} free on this server"
        if self.held(peer) + amount > self.per_peer:
            return f"{amount} asked, {self.held(peer)} already held by {peer}, at most {self.per_peer} per peer"
        return None

    def fits_ever(self, amount: int) -> bool:
        """Whether `amount` could be taken once everything else is released."""
        return 0 < amount <= min(self.total, self.per_peer)

    def try_take(self, peer: str, amount: int) -> bool:
        if amount <= 0:
            raise ValueError(f"a share needs a positive amount, got {amount}")
        if self.refusal(peer, amount) is not None:
            return False
        self.used += amount
        self.by_peer[peer] = self.held(peer) + amount
        return True

    def release(self, peer: str, amount: int) -> None:
        if not 0 < amount <= self.held(peer):
            raise ValueError(f"cannot release {amount} for {peer}, it holds {self.held(peer)}")
        self.used -= amount
        left = self.held(peer) - amount
        if left:
            self.by_peer[peer] = left
        else:
            del self.by_peer[peer]


@dataclass(frozen=True)
class HeldSession:
    """A session as eviction sees it."""

    key: int
    peer: str
    tokens: int
    idle_since: float
    """When its latest step ended (or it opened); a step under way counts as busy (inf)."""


def cache_victims(ledger: ShareLedger, sessions: Sequence[HeldSession], peer: str, tokens: int,
                  now: float, min_idle: float, share: int) -> list[int]:
    """Sessions to close so that `peer` can take `tokens` cache tokens.

    A peer may use more than its `share` while nobody else needs the room (a lone user gets
    the whole server); that surplus is borrowed. Candidates, in this order: sessions idle for
    at least `min_idle` (longest idle first), then, if the asker stays within its own share,
    sessions of peers holding more than their share that are not computing (the hoarder's
    borrowed room goes back to a fair asker even if it steps every second). A session under
    way is never closed, and none are chosen unless closing them makes the request fit
    (closing sessions that would not help only hurts).
    """
    need = tokens - ledger.free
    if need <= 0:
        return []
    live = [s for s in sessions if s.idle_since != math.inf]
    stale = sorted((s for s in live if now - s.idle_since >= min_idle), key=lambda s: s.idle_since)
    within_share = ledger.held(peer) + tokens <= share
    others = sorted((s for s in live if s not in stale and s.peer != peer), key=lambda s: s.idle_since)
    left = dict(ledger.by_peer)
    chosen: list[int] = []
    for session in stale + (others if within_share else []):
        if need <= 0:
            break
        if session not in stale and left.get(session.peer, 0) <= share:
            continue  # within its share and active: it stays
        chosen.append(session.key)
        need -= session.tokens
        left[session.peer] = left.get(session.peer, 0) - session.tokens
    return chosen if need <= 0 else []


class Overloaded(CacheExhausted):
    """A request that would take the server or its peer past a cap (RESOURCE_EXHAUSTED)."""
