"""What one DHT node stores: per key, a dictionary server id -> newest signed entry.

Pure: entries arrive already verified (`swarm.codec.entries.open_entry`), the caller
passes the clock in, nothing here touches the network. Rules:

- A store MERGES into the key's dictionary; it never replaces other servers' entries.
- Per server id the newest `issued_at` wins. An older one is a replay and is rejected;
  the same entry again is accepted as a no-op. After an entry expires its `issued_at`
  is remembered as a watermark for `replay_window` seconds (the longest an entry can
  live), so an old entry cannot come back after a newer one (e.g. an OFFLINE
  announcement with a short TTL) has expired.
- Expired entries vanish on every access and on `purge`.
- Each key is capped in entries and in bytes, which bounds the answer to a lookup (one
  UDP datagram, see `swarm.dht.config`). When over a cap, `swarm.dht.admission` says
  who goes: expired entries first, then only entries whose server has not yet proven
  itself by re-announcing; an unproven newcomer never pushes out a proven entry.
- The number of keys is capped too; a new key beyond it is refused.

`newest_per_server` merges lookup answers from several nodes with the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from swarm.codec.entries import VerifiedEntry
from swarm.dht.admission import Standing, choose_victim, is_proven
from swarm.errors import RecordRejected
from swarm.records import ModelEntry


@dataclass(frozen=True)
class StorageLimits:
    """Bounds on what one node stores."""

    max_entries_per_key: int = 256
    """Most entries (servers) under one key."""
    max_value_bytes: int = 56_000
    """Most bytes of serialized entries under one key: with the framing of a lookup answer
    (< 3 KB, see `swarm.dht.config`) it stays below one UDP datagram (65,507 B). Typical
    block entries (~180 B) hit the 256-entry cap first; block entries at every field's
    limit (~424 B) still fit 130 servers on one block."""
    max_keys: int = 65_536
    """Most keys one node stores (memory bound; ~56 KB each at worst)."""
    replay_window: float = 3600.0
    """How long the issued_at of an expired entry is remembered (= EntryLimits.max_ttl)."""
    proven_after: float = 1.0
    """Seconds after first storing a server's entry from which a refresh (a newer entry
    of the same server) proves the server is re-announcing; a proven entry cannot be
    evicted by an unproven one (`swarm.dht.admission`). Short: it only has to tell a
    second announce round from a burst, and servers may announce every few seconds."""


@dataclass(frozen=True)
class _Stored:
    raw: bytes
    issued_at: float
    expiration: float
    group: str
    first_stored: float
    proven: bool

    def standing(self) -> Standing:
        return Standing(self.first_stored, self.expiration, self.group, self.proven)


@dataclass
class _Slot:
    entries: dict[str, _Stored] = field(default_factory=dict)
    watermarks: dict[str, tuple[float, float]] = field(default_factory=dict)
    """server id -> (issued_at of its expired entry, when to forget it)."""

    def size(self) -> int:
        return sum(len(s.raw) for s in self.entries.values())


def _group_of(entry: VerifiedEntry) -> str:
    return entry.body.model if isinstance(entry.body, ModelEntry) else ""


class EntryStore:
    """Per-key dictionaries of signed entries, keyed by 20-byte key digests."""

    def __init__(self, limits: StorageLimits = StorageLimits()) -> None:
        self.limits = limits
        self._slots: dict[bytes, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def put(self, dkey: bytes, entry: VerifiedEntry, now: float) -> bool:
        """Merges `entry` under `dkey`. True if stored, False if it was already there.

        Raises RecordRejected for a replay, an entry the key's caps push out at once,
        or a new key when the node stores `max_keys` keys.
        """
        slot = self._slots.get(dkey)
        if slot is None:
            if len(self._slots) >= self.limits.max_keys:
                self.purge(now)
            if len(self._slots) >= self.limits.max_keys:
                raise RecordRejected(f"node stores {self.limits.max_keys} keys already")
            slot = self._slots[dkey] = _Slot()
        self._drop_expired(slot, now)
        if not self._check_replay(slot, entry):
            return False
        previous = slot.entries.get(entry.server_id)
        first, proven = now, False
        if previous is not None:
            first = previous.first_stored
            proven = is_proven(first, previous.proven, now, self.limits.proven_after)
        new = _Stored(entry.raw, entry.issued_at, entry.expiration, _group_of(entry), first, proven)
        slot.entries[entry.server_id] = new
        if entry.server_id in self._enforce_caps(slot, entry.server_id):
            if previous is not None:
                slot.entries[entry.server_id] = previous
            self._forget_if_empty(dkey, slot)
            raise RecordRejected("key is full of entries of servers that keep announcing")
        return True

    def get(self, dkey: bytes, now: float) -> list[bytes]:
        """The live entries under `dkey`, newest first (empty if none)."""
        slot = self._slots.get(dkey)
        if slot is None:
            return []
        self._drop_expired(slot, now)
        self._forget_if_empty(dkey, slot)
        ordered = sorted(slot.entries.values(), key=lambda s: s.issued_at, reverse=True)
        return [s.raw for s in ordered]

    def items(self, now: float) -> list[tuple[bytes, list[bytes]]]:
        """Every key digest with its live entries (for handing keys to new nodes)."""
        self.purge(now)
        return [(dkey, self.get(dkey, now)) for dkey in list(self._slots)]

    def purge(self, now: float) -> int:
        """Drops expired entries and forgotten watermarks; returns how many keys remain."""
        for dkey, slot in list(self._slots.items()):
            self._drop_expired(slot, now)
            self._forget_if_empty(dkey, slot)
        return len(self._slots)

    def _check_replay(self, slot: _Slot, entry: VerifiedEntry) -> bool:
        stored = slot.entries.get(entry.server_id)
        if stored is not None:
            if entry.issued_at == stored.issued_at and entry.raw == stored.raw:
                return False
            if entry.issued_at <= stored.issued_at:
                raise RecordRejected(
                    f"replay: entry of {entry.server_id} issued at {entry.issued_at} "
                    f"is not newer than the stored one ({stored.issued_at})"
                )
        mark = slot.watermarks.get(entry.server_id)
        if mark is not None and entry.issued_at <= mark[0]:
            raise RecordRejected(f"replay: entry of {entry.server_id} is older than one that expired")
        return True

    def _drop_expired(self, slot: _Slot, now: float) -> None:
        for server_id, stored in list(slot.entries.items()):
            if stored.expiration <= now:
                del slot.entries[server_id]
                slot.watermarks[server_id] = (stored.issued_at, stored.issued_at + self.limits.replay_window)
        for server_id, (_, forget_at) in list(slot.watermarks.items()):
            if forget_at <= now:
                del slot.watermarks[server_id]
        # watermarks are a best effort against replays: bounded like the entries
        while len(slot.watermarks) > self.limits.max_entries_per_key:
            oldest = min(slot.watermarks, key=lambda s: slot.watermarks[s][1])
            del slot.watermarks[oldest]

    def _enforce_caps(self, slot: _Slot, newcomer: str) -> list[str]:
        """Evicts until the slot fits its caps; returns the server ids evicted."""
        evicted: list[str] = []
        limits = self.limits
        while len(slot.entries) > limits.max_entries_per_key or slot.size() > limits.max_value_bytes:
            standings = {sid: s.standing() for sid, s in slot.entries.items()}
            victim = choose_victim(standings, newcomer)
            del slot.entries[victim]
            evicted.append(victim)
            if victim == newcomer:
                break
        return evicted

    def _forget_if_empty(self, dkey: bytes, slot: _Slot) -> None:
        if not slot.entries and not slot.watermarks:
            self._slots.pop(dkey, None)


def newest_per_server(entries: Iterable[VerifiedEntry]) -> list[VerifiedEntry]:
    """Merges entries from several answers: per server id the newest issued_at wins.

    Returned newest first.
    """
    best: dict[str, VerifiedEntry] = {}
    for entry in entries:
        current = best.get(entry.server_id)
        if current is None or entry.issued_at > current.issued_at:
            best[entry.server_id] = entry
    return sorted(best.values(), key=lambda e: e.issued_at, reverse=True)
