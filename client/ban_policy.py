"""Which servers the client avoids for now, with exponential backoff (pure; time passed in).

A failure bans both the server's id AND its address: any number of records (Sybil ids)
pointing at one address that fails are avoided together after one failure, and a server
whose id moved to a new address is judged there afresh. A ban lasts `base_s`, doubling
with each consecutive failure of that key up to `max_s`; a success forgets the record.

A ban may end early: a failure that looked like a dead process (connection refused,
reset: `recheckable`) lets a health check lift the ban as soon as the address answers
again (a restarted server). A server that answered health checks but not the real call
(silent, lying) stays banned for the full term: its health check proves nothing.
`fails_over` says which errors are worth another server at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from swarm.errors import PeerTimedOut, RemoteError, RemoteInvalidInput, SwarmError


@dataclass
class _Ban:
    until: float
    failures: int
    recheckable: bool


@dataclass
class BanList:
    """Bans of server ids and addresses. All times are the caller's clock, in seconds."""

    base_s: float = 5.0
    max_s: float = 300.0
    _bans: dict[str, _Ban] = field(default_factory=dict)
    """By key: "id:<server id>" or "addr:<address>"."""

    def ban(self, server_id: str, now: float, address: str = "", recheckable: bool = False) -> float:
        """Records a failure of `server_id` at `address`; returns how long it is banned for."""
        keys = [f"id:{server_id}"] + ([f"addr:{address}"] if address else [])
        return max(self._ban_key(key, now, recheckable) for key in keys)

    def _ban_key(self, key: str, now: float, recheckable: bool) -> float:
        old = self._bans.get(key)
        failures = (old.failures if old else 0) + 1
        duration = min(self.base_s * 2.0 ** (failures - 1), self.max_s)
        # one failure that proved the process alive but broken makes the whole ban firm
        firm = old is not None and old.until > now and not old.recheckable
        self._bans[key] = _Ban(now + duration, failures, recheckable and not firm)
        return duration

    def succeeded(self, server_id: str, address: str = "") -> None:
        """It answered: forget its failures (and any ban still running on it)."""
        self._bans.pop(f"id:{server_id}", None)
        if address:
            self._bans.pop(f"addr:{address}", None)

    def is_banned(self, server_id: str, now: float, address: str = "") -> bool:
        return self._active(f"id:{server_id}", now) or (bool(address) and self._active(f"addr:{address}", now))

    def _active(self, key: str, now: float) -> bool:
        ban = self._bans.get(key)
        return ban is not None and ban.until > now

    def banned(self, now: float, servers: Iterable[tuple[str, str]] = ()) -> frozenset[str]:
        """Banned server ids: those banned by id, and those of `servers` (id, address) whose
        address is banned."""
        by_id = {k[3:] for k, b in self._bans.items() if k.startswith("id:") and b.until > now}
        by_address = {sid for sid, address in servers if self._active(f"addr:{address}", now)}
        return frozenset(by_id | by_address)

    def recheckable(self, now: float, servers: Iterable[tuple[str, str]]) -> set[str]:
        """Addresses of `servers` whose bans a health check may lift (every ban on the server
        is recheckable)."""
        found = set()
        for sid, address in servers:
            bans = [self._bans.get(f"id:{sid}"), self._bans.get(f"addr:{address}")]
            active = [b for b in bans if b is not None and b.until > now]
            if active and all(b.recheckable for b in active):
                found.add(address)
        return found

    def lift(self, address: str, server_ids: Iterable[str]) -> None:
        """A health check of `address` passed: ends the bans of it and of `server_ids` (its
        servers), keeping their failure counts (a relapse bans longer)."""
        for key in [f"addr:{address}", *(f"id:{s}" for s in server_ids)]:
            ban = self._bans.get(key)
            if ban is not None and ban.recheckable:
                ban.until = float("-inf")

    def earliest_end(self, now: float, servers: Iterable[tuple[str, str]]) -> float | None:
        """When the first of `servers` (id, address) that is banned now becomes usable."""
        ends = []
        for sid, address in servers:
            bans = [self._bans.get(f"id:{sid}"), self._bans.get(f"addr:{address}")]
            active = [b.until for b in bans if b is not None and b.until > now]
            if active:
                ends.append(max(active))
        return min(ends) if ends else None


def recheckable(error: SwarmError) -> bool:
    """Whether the failure looks like a dead process, so that a passing health check shows a
    restart (connection refused or reset), rather than a live server that did not answer."""
    return isinstance(error, RemoteError) and error.code == "UNAVAILABLE" and not isinstance(error, PeerTimedOut)


def fails_over(error: SwarmError) -> bool:
    """Whether another server may succeed where this error came from (decided by class).

    A request a server rejected as malformed (`RemoteInvalidInput`) would be rejected by
    any other: it is raised at once. Everything else (unreachable, died, hung, draining,
    full, refused the blocks or the session, a wrong answer) is worth another server.
    """
    # (a malformed answer FROM a server, a local CodecError, is that server's fault: fail over)
    return not isinstance(error, RemoteInvalidInput)
