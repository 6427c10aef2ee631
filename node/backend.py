"""Runs the served blocks: the only place where the server does torch work.

Every call goes through one compute thread (node/scheduler.py) so that the event loop
keeps serving other sessions' messages and health checks while a step computes, and so
that steps from many sessions do not fight over the CPU's cores (torch parallelizes inside
each op). Inference steps go ahead of Forward/Backward passes, which run one block per
task so that a step never waits for a whole pass; batch work keeps a share of the thread.
A decode-sized step may run on the event loop instead, in the compute thread's slot, when
that thread is idle (`PriorityExecutor.run(inline=True)`): two thread hand-offs fewer per hop.
"""

from __future__ import annotations

import torch

from swarm.model.families import BlockStack, SessionCache
from node.graph_cache import KeptPass, KeptPiece, tuning_key
from node.scheduler import DEFAULT_BATCH_SHARE, Priority, PriorityExecutor, Scheduling
from node.validation import check_finite_output, default_positions
from swarm.errors import NotServed
from swarm.prefill import prefill_spans
from swarm.model.families.tuning import check_tuning
from swarm.records import BlockRange
from swarm.tuning import Tuning

FORWARD_CHUNK_TOKENS = 512
"""Longer Forward rows run a block in chunks of this many tokens: one task of a block over
8k tokens took 1.3 s on 2 CPU cores, and an inference step waits for the task that runs."""
INLINE_STEP_TOKENS = 16
"""Steps of at most this many tokens (batch x tokens: decoding, speculative verification)
may run on the event loop when the compute thread is idle (`PriorityExecutor.run(inline=)`)."""


class BlockBackend:
    """Async facade over a `BlockStack`: inference steps, forward and backward passes."""

    def __init__(self, stack: BlockStack, scheduling: Scheduling = Scheduling.PRIORITY,
                 batch_share: float = DEFAULT_BATCH_SHARE, adapters: dict[str, Tuning] | None = None) -> None:
        self.stack = stack
        self.executor = PriorityExecutor("torch", scheduling, batch_share)
        """The compute thread (its queue length is a health figure)."""
        self.adapters = adapters or {}
        """Served LoRA adapters by name (all blocks of the model: a move keeps them usable)."""

    def check_tuning(self, tuning: Tuning, blocks: BlockRange, batch: int | None) -> None:
        """InvalidInput (or NotServed for an unknown adapter name) unless `tuning` can be applied."""
        if tuning.adapter:
            if tuning.adapter not in self.adapters:
                raise NotServed(f"adapter {tuning.adapter!r} is not served here; this server serves "
                                f"{sorted(self.adapters) or 'none'}")
            return
        check_tuning(tuning, blocks, self.hidden_size, batch, self.stack.lora_targets())

    def _resolved(self, tuning: Tuning | None, blocks: BlockRange) -> Tuning | None:
        """A served adapter's own tensors in place of its name."""
        if tuning is None or not tuning.adapter:
            return tuning
        return self.adapters[tuning.adapter].restricted(blocks) or None

    @property
    def hidden_size(self) -> int:
        return self.stack.info.hidden_size

    def close(self) -> None:
        self.executor.shutdown()

    def new_cache(self, blocks: BlockRange) -> SessionCache:
        return self.stack.new_cache(blocks)

    def cache_length(self, cache: SessionCache) -> int:
        return self.stack.cache_length(cache)

    async def step(
        self,
        cache: SessionCache,
        blocks: BlockRange,
        hidden: torch.Tensor,
        start: int,
        position_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        tuning: Tuning | None = None,
    ) -> torch.Tensor:
        """Appends `hidden` at cache position `start` (dropping anything after it).

        A long step runs as consecutive chunks (`swarm.prefill.prefill_spans`, as clients
        send long prompts): the same result, with a bounded attention working set and other
        sessions' steps between the chunks, whatever the client sent."""
        tuning = self._resolved(tuning, blocks)
        batch, tokens, hidden_size = hidden.shape
        spans = prefill_spans(start, tokens, batch, hidden_size, hidden.dtype)
        if len(spans) == 1:
            return await self.executor.run(Priority.INFERENCE, run_step, self.stack, cache, blocks, hidden, start,
                                            position_ids, attention_mask, tuning,
                                            inline=batch * tokens <= INLINE_STEP_TOKENS)
        positions = position_ids if position_ids is not None else default_positions(batch, start, tokens)
        mask = attention_mask if attention_mask is not None else torch.ones(batch, start + tokens, dtype=torch.int64)
        outs = [await self.executor.run(Priority.INFERENCE, run_step, self.stack, cache, blocks, hidden[:, a:b],
                                        start + a, positions[:, a:b], mask[:, :start + b], tuning)
                for a, b in spans]
        return torch.cat(outs, dim=1)

    async def forward(
        self, blocks: BlockRange, hidden: torch.Tensor, attention_mask: torch.Tensor | None, peer: str = "",
        tuning: Tuning | None = None,
    ) -> torch.Tensor:
        """The blocks' output; `peer` (the client address) has its share of batch work's time."""
        stack = self.stack  # every piece on the same blocks even if a rebalancing move swaps them meanwhile
        tuning = self._resolved(tuning, blocks)
        mask, positions = _batch_inputs(hidden, attention_mask)
        out = hidden.to(stack.dtype)
        with self.executor.active(Priority.BATCH):
            for block in self._pieces(blocks):
                piece = tuning.restricted(block) if tuning else None
                if out.shape[1] <= FORWARD_CHUNK_TOKENS or self.executor.scheduling is Scheduling.FIFO:
                    out = await self.executor.run(Priority.BATCH, _forward_piece, stack, block, out, mask,
                                                  positions, piece, peer=peer)
                else:
                    out = await self._chunked_piece(stack, block, out, mask, positions, peer, piece)
        return out.to(hidden.dtype)

    async def _chunked_piece(self, stack: BlockStack, block: BlockRange, hidden: torch.Tensor, mask: torch.Tensor,
                             positions: torch.Tensor, peer: str, tuning: Tuning | None) -> torch.Tensor:
        """A block over long rows, FORWARD_CHUNK_TOKENS at a time through a throwaway KV cache
        (chunked prefill): the same result, in tasks short enough that steps need not wait long."""
        cache = stack.new_cache(block)
        outs = []
        for start in range(0, hidden.shape[1], FORWARD_CHUNK_TOKENS):
            end = min(start + FORWARD_CHUNK_TOKENS, hidden.shape[1])
            outs.append(await self.executor.run(Priority.BATCH, run_step, stack, cache, block, hidden[:, start:end],
                                                start, positions[:, start:end], mask[:, :end], tuning,
                                                peer=peer))
        return torch.cat(outs, dim=1)

    async def forward_keeping(
        self, blocks: BlockRange, hidden: torch.Tensor, attention_mask: torch.Tensor | None, peer: str = "",
        tuning: Tuning | None = None,
    ) -> tuple[torch.Tensor, KeptPass]:
        """The blocks' output, and their graphs for the pass's Backward (`node.graph_cache`).
        `tuning` must be identifiable (`tuning_key` not None)."""
        key = tuning_key(tuning)
        if key is None:  # (checked before any work)
            raise ValueError("a kept pass needs a tuning with a digest or an adapter name")
        stack = self.stack
        mask, positions = _batch_inputs(hidden, attention_mask)
        source = self._differentiated(tuning, blocks)
        with self.executor.active(Priority.BATCH):
            pieces = await self._graph_pieces(stack, self._pieces(blocks), hidden.detach().to(stack.dtype), mask,
                                              positions, source, peer)
        kept = KeptPass(stack, blocks, hidden, attention_mask, key, source, tuple(pieces))
        return pieces[-1].out.detach().to(hidden.dtype), kept

    async def backward(
        self,
        blocks: BlockRange,
        hidden: torch.Tensor,
        grad_outputs: torch.Tensor,
        attention_mask: torch.Tensor | None,
        peer: str = "",
        tuning: Tuning | None = None,
        kept: KeptPass | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The gradients of `sum(forward(hidden) * grad_outputs)` with respect to `hidden` and
        to each of `tuning`'s tensors (in `tuning.slots()` order; [] without tuning).

        The pieces `kept` holds (if it matches these inputs) are not computed again; the rest
        run forward piece by piece keeping each piece's graph, then back through all pieces in
        reverse: the same work as one autograd pass over the range, queued in pieces.
        """
        stack = self.stack
        mask, positions = _batch_inputs(hidden, attention_mask)
        usable = kept is not None and kept.matches(stack, blocks, hidden, attention_mask, tuning)
        source = kept.source if kept is not None and usable else self._differentiated(tuning, blocks)
        pieces = list(kept.pieces) if kept is not None and usable else []
        grad = grad_outputs.to(stack.dtype)
        grads: dict[int, torch.Tensor] = {}
        with self.executor.active(Priority.BATCH):
            start = pieces[-1].out.detach() if pieces else hidden.detach().to(stack.dtype)
            pieces += await self._graph_pieces(stack, self._pieces(blocks)[len(pieces):], start, mask, positions,
                                               source, peer)
            for piece in reversed(pieces):
                grad, param_grads = await self.executor.run(Priority.BATCH, _piece_grads, piece.out, piece.inputs,
                                                            list(piece.params), grad, peer=peer)
                grads.update({id(p): g for p, g in zip(piece.params, param_grads)})
        differentiated = source if tuning is not None and not tuning.adapter else None  # (not a served adapter's)
        tuning_grads = [grads[id(t)].to(t.dtype) for t in differentiated.tensors()] if differentiated else []
        return grad.to(hidden.dtype), tuning_grads

    def _differentiated(self, tuning: Tuning | None, blocks: BlockRange) -> Tuning | None:
        """The tuning a graph runs with: a client's tensors as fresh autograd leaves (their
        gradients are part of the answer), a served adapter's own tensors (no gradients)."""
        if tuning is not None and tuning.adapter:
            return self._resolved(tuning, blocks)
        return _leaf_tuning(tuning)

    async def _graph_pieces(self, stack: BlockStack, ranges: list[BlockRange], hidden: torch.Tensor,
                            mask: torch.Tensor, positions: torch.Tensor, source: Tuning | None, peer: str
                            ) -> list[KeptPiece]:
        """Forward through `ranges` in order, each piece's graph kept."""
        pieces: list[KeptPiece] = []
        out = hidden
        for block in ranges:
            inputs = out.detach().requires_grad_(True)
            piece = source.restricted(block) if source else None
            out, nbytes = await self.executor.run(Priority.BATCH, _graph_piece, stack, block, inputs, mask,
                                                  positions, piece, peer=peer)
            pieces.append(KeptPiece(block, inputs, out, tuple(piece.tensors()) if piece else (), nbytes))
        return pieces

    def _pieces(self, blocks: BlockRange) -> list[BlockRange]:
        """The ranges a pass is queued in: single blocks, or the whole range for fifo (one task per call)."""
        if self.executor.scheduling is Scheduling.FIFO:
            return [blocks]
        return [BlockRange(index, index + 1) for index in range(blocks.start, blocks.end)]


def _forward_piece(stack: BlockStack, block: BlockRange, hidden: torch.Tensor, mask: torch.Tensor,
                   positions: torch.Tensor, tuning: Tuning | None) -> torch.Tensor:
    with torch.inference_mode():
        return stack.forward(hidden, blocks=block, position_ids=positions, attention_mask=mask, cache=None,
                             tuning=tuning)


def _graph_piece(stack: BlockStack, block: BlockRange, inputs: torch.Tensor, mask: torch.Tensor,
                 positions: torch.Tensor, tuning: Tuning | None) -> tuple[torch.Tensor, int]:
    """A piece of a training pass: forward with the graph kept for `_piece_grads`, and the
    bytes of what autograd saved for it (the weights' storages, shared by all, not counted)."""
    weights = {p.untyped_storage().data_ptr() for p in stack.layers.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = stack.forward(inputs, blocks=block, position_ids=positions, attention_mask=mask, cache=None,
                            tuning=tuning)
    return out, sum(saved.values())


def _leaf_tuning(tuning: Tuning | None) -> Tuning | None:
    """Tuning whose tensors are fresh autograd leaves (their gradients are the answer)."""
    if not tuning:
        return None
    slots = tuning.slots()
    leaves = [t.detach().requires_grad_(True) for _, t in slots]  # (a served adapter's never come here)
    return Tuning.from_slots([s for s, _ in slots], leaves, tuning.lora_scale)


def _batch_inputs(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    batch, tokens, _ = hidden.shape
    if attention_mask is None:
        mask = torch.ones(batch, tokens, dtype=torch.int64)
    else:
        mask = attention_mask.to(torch.int64)
    # as transformers' generate does for left padding: positions count real tokens only
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return mask, positions


def _piece_grads(out: torch.Tensor, inputs: torch.Tensor, params: list[torch.Tensor],
                 grad_outputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Gradients of one piece w.r.t. its input and its tuning tensors (zeros where unused,
    e.g. a prompt longer than the sequence)."""
    grads = torch.autograd.grad(out, [inputs, *params], grad_outputs.to(out.dtype), allow_unused=True)
    param_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads[1:])]
    return grads[0], param_grads


def run_step(
    stack: BlockStack,
    cache: SessionCache,
    blocks: BlockRange,
    hidden: torch.Tensor,
    start: int,
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    tuning: Tuning | None = None,
) -> torch.Tensor:
    """One inference step, synchronously (the executor's job; also the benchmarks' floor)."""
    batch, tokens, _ = hidden.shape
    if stack.cache_length(cache) > start:
        stack.crop_cache(cache, start)
    if position_ids is None:
        position_ids = default_positions(batch, start, tokens)
    if attention_mask is None:
        attention_mask = torch.ones(batch, start + tokens, dtype=torch.int64)
    with torch.inference_mode():
        out = stack.forward(
            hidden.to(stack.dtype),
            blocks=blocks,
            position_ids=position_ids.to(torch.int64),
            attention_mask=attention_mask.to(torch.int64),
            cache=cache,
            tuning=tuning,
        )
    out = out.to(hidden.dtype)
    # here, not after the await: the output and torch's dispatcher are still in the caches
    # (checked on the event loop after a step it cost ~100 us per hop, cold)
    check_finite_output(out)
    return out
