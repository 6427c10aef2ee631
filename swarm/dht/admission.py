"""Which entry leaves a full key: admission and eviction that favour proven servers.

Pure: the caller passes what it knows of each stored entry (`Standing`) and the clock
readings are already in it; nothing here touches the network or the time.

Why: a key's room is bounded (`StorageLimits.max_entries_per_key` and `max_value_bytes`,
so that a lookup's answer stays one UDP datagram, see `swarm.dht.config`). Anyone can
make identities and sign entries for free, so when the room is full the question is who
must leave. A genuine server re-announces every period; a flood is typically published
once. So an entry is *proven* once its server has refreshed it (stored a newer entry)
at least `StorageLimits.proven_after` seconds after we first stored it: it has been seen
in two announce rounds. Eviction order, deterministic:

1. Expired entries always go first (the store drops them before asking here).
2. Only *unproven* entries may be evicted to make room; the new entry itself counts
   as unproven unless it refreshes a proven one. Among the unproven, the victim comes
   from the largest group (groups are models under model keys, so one popular model
   cannot push the others out of `swarm/models`; one group elsewhere; ties: the group
   name), and within it the entry first stored EARLIEST goes (ties: the one expiring
   first, then the server id). An unproven entry that has sat unrefreshed longest is
   the least likely to belong to a server that is still announcing; a newcomer always
   gets a chance to prove itself by its next announce (unless the flood outpaces it).
3. If no unproven entry is left to go, the newcomer is refused (a proven one is never
   pushed out by an unproven one).
4. Only when every entry is proven and a refresh grew a key past its byte cap does a
   proven entry go: the one expiring first (ties: first stored, server id).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Standing:
    """What eviction needs to know of one stored entry."""

    first_stored: float
    """When this node first stored an entry of this server under this key (local clock)."""
    expiration: float
    """When the entry expires."""
    group: str
    """Its fairness group (a model name under model keys, "" otherwise)."""
    proven: bool
    """True once the server refreshed it a round later (see the module docstring)."""


def is_proven(first_stored: float, was_proven: bool, now: float, proven_after: float) -> bool:
    """Whether a refresh stored at `now` proves the server (see the module docstring)."""
    return was_proven or now - first_stored >= proven_after


def choose_victim(entries: Mapping[str, Standing], newcomer: str) -> str:
    """The server id whose entry leaves a key that is over its caps.

    `entries` includes the newcomer's (just stored); returns the newcomer's id when it
    is the one refused.
    """
    unproven = {sid: s for sid, s in entries.items() if not s.proven}
    others = {sid: s for sid, s in unproven.items() if sid != newcomer}
    if others:
        sizes = Counter(s.group for s in others.values())
        group = min(sizes, key=lambda g: (-sizes[g], g))
        return min(
            (sid for sid, s in others.items() if s.group == group),
            key=lambda sid: (others[sid].first_stored, others[sid].expiration, sid),
        )
    if newcomer in unproven:
        return newcomer
    return min(entries, key=lambda sid: (entries[sid].expiration, entries[sid].first_stored, sid))
