"""Autograd graphs of training passes that a server keeps from a Forward to its Backward.

Why: a Backward call brings its pass's input back with the output gradient; without a kept
graph the server must run the forward again to differentiate it, so a training step costs
it forward + forward + backward instead of forward + backward (about 4/3 of the work, the
gap `scripts/bench finetune` showed). A Forward with a pass id (`ForwardCall.pass_id`) keeps
its pieces' graphs here under (client address, pass id) and the Backward with that id
takes them.

Bounded, as everything a client can make a server hold: kept bytes (the tensors autograd
saved, weights excluded) stay within `max_bytes`, the least recently kept passes go first,
and a pass not taken within `ttl` seconds is dropped. One client address may fill the
whole budget while nobody else trains, but only its share (`peer_share`, half) is safe
from others: room for a new pass is made from the asker's own passes and those of
addresses holding more than their share, oldest first, and a pass is cut to what the
asker may take without touching others' shares. A pass cut this way keeps only its
leading pieces (the Backward recomputes the rest from the last kept output). Losing an
entry costs only that recomputation: a Backward checks that its inputs equal the kept
pass's before using it (`KeptPass.matches`). A flood of passes from one address thus
evicts that address's own passes, never another trainer's within its share. Pure
data: no I/O, the clock is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import torch

from swarm.records import BlockRange
from swarm.tuning import Tuning

DEFAULT_TTL_S = 120.0
"""A training step's Backward follows its Forward within seconds (the rest of the route, the
head and the loss); two minutes also covers a slow client on a loaded machine."""


@dataclass(frozen=True)
class KeptPiece:
    """One piece of a pass (a block, or the whole range for fifo scheduling) with its graph."""

    blocks: BlockRange
    inputs: torch.Tensor
    """The piece's input: an autograd leaf (its gradient is the piece's input gradient)."""
    out: torch.Tensor
    """The piece's output, with the graph back to `inputs` and to `params`."""
    params: tuple[torch.Tensor, ...]
    """The piece's tuning tensors (autograd leaves), in their slots' order."""
    nbytes: int
    """Bytes of the tensors autograd saved for this piece (weights excluded)."""


def tuning_key(tuning: Tuning | None) -> tuple[object, ...] | None:
    """What identifies a call's tuning for reuse; None if it cannot be identified (no digest)."""
    if tuning is None:
        return ("none",)
    if tuning.adapter:
        return ("adapter", tuning.adapter)
    if tuning.digest:
        return ("digest", tuning.digest, tuning.lora_scale)
    return None


@dataclass(frozen=True)
class KeptPass:
    """A Forward's graphs, and what a Backward must match to use them."""

    stack: object
    """The block stack the graphs ran on (a rebalancing move replaces it: then no match)."""
    blocks: BlockRange
    hidden: torch.Tensor
    """The Forward's hidden states as received (the Backward's must be equal)."""
    mask: torch.Tensor | None
    tuning: tuple[object, ...]
    """`tuning_key` of the Forward's tuning."""
    source: Tuning | None
    """The tuning the pieces ran with (autograd leaves, or a served adapter's tensors): the
    pieces a Backward recomputes must use the very same tensors."""
    pieces: tuple[KeptPiece, ...]
    """The pass's leading pieces, in order (all of them unless the budget cut the pass)."""

    @property
    def nbytes(self) -> int:
        mask = self.mask.nbytes if self.mask is not None else 0
        return self.hidden.nbytes + mask + sum(piece.nbytes for piece in self.pieces)

    def matches(self, stack: object, blocks: BlockRange, hidden: torch.Tensor, mask: torch.Tensor | None,
                tuning: Tuning | None) -> bool:
        """True if a Backward of these inputs may use this pass's graphs."""
        return (stack is self.stack and blocks == self.blocks and tuning_key(tuning) == self.tuning
                and _equal(hidden, self.hidden) and _equal(mask, self.mask))


def _equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


class GraphCache:
    """Kept passes by (client address, pass id), oldest out first, under a byte budget and
    a per-address share."""

    def __init__(self, max_bytes: int, ttl: float = DEFAULT_TTL_S, peer_share: float = 0.5) -> None:
        if not 0.0 < peer_share <= 1.0:
            raise ValueError(f"peer share must be in (0, 1], got {peer_share}")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.share = int(max_bytes * peer_share)
        self.used = 0
        self._by_peer: dict[str, int] = {}
        self._entries: OrderedDict[tuple[str, str], tuple[float, KeptPass]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def held(self, peer: str) -> int:
        """Bytes the passes of `peer` hold."""
        return self._by_peer.get(peer, 0)

    def put(self, peer: str, pass_id: str, kept: KeptPass, now: float) -> int:
        """Keeps `kept` (its leading pieces if all do not fit what `peer` may take); returns
        how many pieces were kept. Makes room by dropping expired passes, then the oldest of
        `peer`'s own and of addresses over their share."""
        self._expire(now)
        self._drop((peer, pass_id))
        allowed = self.max_bytes - sum(min(held, self.share) for other, held in self._by_peer.items()
                                       if other != peer)
        pieces = list(kept.pieces)
        while pieces and replace(kept, pieces=tuple(pieces)).nbytes > allowed:
            pieces.pop()
        if not pieces:
            return 0
        if len(pieces) < len(kept.pieces):
            kept = replace(kept, pieces=tuple(pieces))
        while self.used + kept.nbytes > self.max_bytes:
            # exists while the room is short: `allowed` left out exactly what others' shares hold
            self._drop(next(key for key in self._entries if key[0] == peer or self.held(key[0]) > self.share))
        self._entries[(peer, pass_id)] = (now, kept)
        self._count(peer, kept.nbytes)
        return len(pieces)

    def take(self, peer: str, pass_id: str, now: float) -> KeptPass | None:
        """The pass kept under (peer, pass_id), removed from the cache; None if there is none."""
        self._expire(now)
        entry = self._entries.pop((peer, pass_id), None)
        if entry is None:
            return None
        self._count(peer, -entry[1].nbytes)
        return entry[1]

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (kept_at, _) = next(iter(self._entries.items()))
            if now - kept_at < self.ttl:
                return
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._count(key[0], -entry[1].nbytes)

    def _count(self, peer: str, nbytes: int) -> None:
        self.used += nbytes
        held = self._by_peer.get(peer, 0) + nbytes
        if held:
            self._by_peer[peer] = held
        else:
            self._by_peer.pop(peer, None)
