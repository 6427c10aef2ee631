"""Spot checks of a session's servers: recompute a step's segment on other servers, vote.

For a sampled step (`client.verification.StepSampler`), each segment that answered is
recomputed by a stateless Forward call on another server holding the same blocks, over
everything that crossed the segment's first boundary so far (the session keeps it for
replays, `client.session_state`); the step's positions are compared within the dtype's
tolerance (or the wire compression's, if the session's activations travel compressed). On disagreement a third server votes; servers outvoted by the majority are
banned (id and address), and an outvoted session server is returned so that the
session fails it over and redoes the step. Without a third server the disagreement is
counted and logged as unresolved (nobody can tell who lied). Steps of padded batches or
with custom positions are not checked (a Forward call derives positions from the mask).
A check costs the witness a Forward pass over the session's whole prefix.

Not here: the pure decisions (`client.verification`), failing over (`client.failover`).
"""

from __future__ import annotations

import logging
import random

import torch

from client.route_opener import RouteSource
from client.segments import SegmentStream
from client.session_state import SessionHistory, StepMeta
from client.transport import Transport
from client.verification import StepSampler, VerificationStats, compared_dtype, majority, mismatch, order_witnesses
from swarm.codec.compression import policy
from swarm.errors import SwarmError
from swarm.protocol import ForwardCall
from swarm.tuning import Tuning

logger = logging.getLogger(__name__)


class Verifier:
    """Checks sampled steps of one session."""

    def __init__(self, swarm: RouteSource, transport: Transport, model: str, history: SessionHistory,
                 stats: VerificationStats, rng: random.Random, tuning: Tuning | None = None) -> None:
        self.swarm, self.transport, self.model, self.history = swarm, transport, model, history
        self.stats = stats
        self.sampler = StepSampler(swarm.config.verify_fraction, rng)
        self._rng = rng
        self._asked: dict[str, int] = {}
        self._tuning = tuning
        """The session's prompts and LoRA factors: a witness recomputes with them."""
        self.precision = compared_dtype(history.dtype, policy(swarm.config.wire_compression, history.dtype))
        """What answers are compared at: the session's dtype, or its wire compression's."""

    def wanted(self, meta: StepMeta) -> bool:
        """Whether to check this step (sampled, and a Forward call can recompute it)."""
        return self.sampler.pick() and self._plain(meta)

    async def check(self, segments: list[SegmentStream], answered: set[SegmentStream], meta: StepMeta,
                    result: torch.Tensor, session_id: str) -> SegmentStream | None:
        """Verifies a wanted step; returns the first session segment outvoted (banned).

        Only segments whose input and output of this step the client saw are checked: in a
        chain, a middle server's copy may not have come (the boundary log would hold an
        older step there)."""
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            if (index > 0 and segments[index - 1] not in answered) or (not last and segment not in answered):
                continue
            claimed = result if last else self.history.step_input(segment.blocks.end, meta)
            if not await self._check_segment(segment, meta, claimed, session_id):
                return segment
        return None

    async def _check_segment(self, segment: SegmentStream, meta: StepMeta, claimed: torch.Tensor,
                             session_id: str) -> bool:
        """False if the segment's server was outvoted."""
        witnesses = order_witnesses(
            [s for s, _ in self.swarm.replicas(self.model, segment.blocks, frozenset({segment.server_id}))],
            self._asked, self._rng)
        addresses = dict(self.swarm.replicas(self.model, segment.blocks, frozenset({segment.server_id})))
        outputs = {segment.server_id: claimed}
        for witness in witnesses:
            if len(outputs) == 3 or (len(outputs) == 2 and self._all_agree(outputs)):
                break
            out = await self._recompute(witness, addresses[witness], segment, meta)
            if out is None:
                continue
            outputs[witness] = out
            if len(outputs) == 2:
                self.stats.steps_checked += 1
                if not self._all_agree(outputs):
                    self.stats.disagreements += 1
                    logger.warning("session %s: servers %s and %s disagree on blocks %s (mismatch %.3g); "
                                   "asking a third", session_id, segment.server_id[:8], witness[:8],
                                   segment.blocks, mismatch(claimed, out))
        if len(outputs) < 3:
            if len(outputs) == 2 and not self._all_agree(outputs):
                self.stats.unresolved += 1
                logger.warning("session %s: no third server of blocks %s to settle a disagreement",
                               session_id, segment.blocks)
            return True
        _, outvoted = majority(outputs, self.precision)
        for server_id in outvoted:
            address = segment.stream.address if server_id == segment.server_id else addresses[server_id]
            logger.warning("session %s: server %s at %s outvoted on blocks %s: banned as a liar",
                           session_id, server_id[:8], address, segment.blocks)
            self.stats.banned.append(server_id)
            if server_id != segment.server_id:  # (the session's own server: its failover bans it)
                self.swarm.ban(server_id, address)
        return segment.server_id not in outvoted

    @staticmethod
    def _plain(meta: StepMeta) -> bool:
        """Whether a Forward call recomputes the step exactly: no padding and default positions
        (a Forward call derives positions from the mask; padded batches are not checked)."""
        batch = meta.position_ids.shape[0]
        positions = torch.arange(meta.start, meta.start + meta.tokens).expand(batch, meta.tokens)
        return bool(meta.attention_mask.all()) and torch.equal(meta.position_ids, positions)

    def _all_agree(self, outputs: dict[str, torch.Tensor]) -> bool:
        winners, outvoted = majority(outputs, self.precision)
        return not outvoted and len(winners) == len(outputs)

    async def _recompute(self, witness: str, address: str, segment: SegmentStream,
                         meta: StepMeta) -> torch.Tensor | None:
        """The witness's output for the step's positions, or None if it failed to answer."""
        self._asked[witness] = self._asked.get(witness, 0) + 1
        seen = self.history.upto(segment.blocks.start, meta.start + meta.tokens)
        tuning = self._tuning.restricted(segment.blocks) if self._tuning else None
        call = ForwardCall(self.model, segment.blocks, (seen.hidden.contiguous(), seen.attention_mask.contiguous()),
                           tuning or None)
        try:
            out = await self.transport.forward(address, call, self.swarm.config.step_timeout)
        except SwarmError as error:
            logger.warning("verification call to %s failed (%s): banned like any failed server", address, error)
            self.swarm.ban(witness, address, error)
            return None
        if out.shape[:2] != seen.hidden.shape[:2]:
            logger.info("verification call to %s answered shape %s", address, list(out.shape))
            return None
        return out[:, meta.start : meta.start + meta.tokens]
