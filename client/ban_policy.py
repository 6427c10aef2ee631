"""Which servers the client avoids for now, with exponential backoff (pure; time passed in).

A server that fails is banned for `base_s`, doubling with each consecutive failure up to
`max_s`; a success forgets its record. A banned server gets no new sessions until the ban
expires. `fails_over` says which errors are worth another server at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm.errors import RemoteInvalidInput, SwarmError


@dataclass
class BanList:
    """Bans with exponential backoff. All times are the caller's clock, in seconds."""

    base_s: float = 5.0
    max_s: float = 300.0
    _until: dict[str, float] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)

    def ban(self, server_id: str, now: float) -> float:
        """Records a failure; returns how long the server is banned for."""
        failures = self._failures.get(server_id, 0) + 1
        self._failures[server_id] = failures
        duration = min(self.base_s * 2.0 ** (failures - 1), self.max_s)
        self._until[server_id] = now + duration
        return duration

    def succeeded(self, server_id: str) -> None:
        self._failures.pop(server_id, None)

    def is_banned(self, server_id: str, now: float) -> bool:
        return self._until.get(server_id, float("-inf")) > now

    def banned(self, now: float) -> frozenset[str]:
        return frozenset(s for s, until in self._until.items() if until > now)


def fails_over(error: SwarmError) -> bool:
    """Whether another server may succeed where this error came from (decided by class).

    A request a server rejected as malformed (`RemoteInvalidInput`) would be rejected by
    any other: it is raised at once. Everything else (unreachable, died, hung, draining,
    full, refused the blocks or the session) is worth another server.
    """
    # (a malformed answer FROM a server, a local CodecError, is that server's fault: fail over)
    return not isinstance(error, RemoteInvalidInput)
