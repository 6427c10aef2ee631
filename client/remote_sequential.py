"""The model's remote blocks as a sliceable, differentiable torch module.

`model.layers[a:b](hidden)` runs blocks a..b-1 on the swarm with stateless Forward calls
(routes spread over servers by throughput) and supports autograd: gradients with respect
to the hidden states come back through Backward calls, so prompts, adapters or anything
on the client can be trained through frozen remote blocks. A failed server is banned and
its blocks re-routed, within the configured retry bound.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, replace
from typing import Any

import torch

from client.ban_policy import fails_over
from client.inference_session import RemoteInferenceSession
from client.runtime import LoopThread
from client.session_handle import InferenceSession
from client.swarm_client import SwarmClient
from client.transport import Transport
from client.verification import VerificationStats, check_finite
from swarm.errors import SwarmError
from swarm.protocol import ForwardCall
from swarm.records import BlockRange
from swarm.tuning import Tuning, TuningSlot, content_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Hop:
    """One segment of a forward pass and the input it got (kept for backward)."""

    server_id: str
    address: str
    blocks: BlockRange
    inputs: torch.Tensor
    tuning: Tuning | None
    pass_id: str = ""
    """Under which the server may keep the hop's graph for its Backward ("": nothing kept)."""


class RemoteSequential(torch.nn.Module):
    """Blocks `span` of `model` served by the swarm, callable on hidden states."""

    def __init__(self, client: SwarmClient, loop: LoopThread, model: str, num_blocks: int,
                 span: BlockRange | None = None, transport: Transport | None = None,
                 verification: VerificationStats | None = None) -> None:
        super().__init__()
        self.client = client
        self.transport = transport or client.transport
        """How calls reach servers (the client's gRPC transport unless a test injects one)."""
        self.loop = loop
        self.model = model
        self.num_blocks = num_blocks
        self.span = span or BlockRange(0, num_blocks)
        self.verification = verification or VerificationStats()
        """What output checks found in this model's sessions (steps checked, disagreements, bans)."""

    def __len__(self) -> int:
        return len(self.span)

    def __getitem__(self, index: int | slice) -> RemoteSequential:
        blocks = range(self.span.start, self.span.end)[index]
        if isinstance(blocks, int):
            return RemoteSequential(self.client, self.loop, self.model, self.num_blocks,
                                    BlockRange(blocks, blocks + 1), self.transport, self.verification)
        if blocks.step != 1 or len(blocks) == 0:
            raise IndexError(f"remote blocks can only be sliced into contiguous, non-empty ranges: {index}")
        return RemoteSequential(self.client, self.loop, self.model, self.num_blocks,
                                BlockRange(blocks.start, blocks.stop), self.transport, self.verification)

    def __repr__(self) -> str:
        return f"RemoteSequential(model={self.model!r}, blocks={self.span})"

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                tuning: Tuning | None = None) -> torch.Tensor:
        """Hidden states [batch, tokens, hidden] after these blocks (full sequences, no cache).

        `tuning`: deep prompts and LoRA factors (absolute block indices) the servers apply;
        gradients flow back to its tensors (e.g. `nn.Parameter`s) as to `hidden_states`.
        Without it, the served adapter the client config names (if any) is applied."""
        tuning = tuning or self._served_adapter()
        part = tuning.restricted(self.span) if tuning else None
        slots = [slot for slot, _ in part.slots()] if part else []
        tensors = part.tensors() if part else []
        scale = part.lora_scale if part else 1.0
        result: torch.Tensor = _RemoteFunction.apply(  # type: ignore[no-untyped-call]
            hidden_states, attention_mask, self, (slots, scale, part.adapter if part else ""), *tensors)
        return result

    def inference_session(self, max_length: int, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                          tuning: Tuning | None = None) -> InferenceSession:
        """A KV-cache session over these blocks; step it with hidden states. With `tuning`,
        servers apply those deep prompts and LoRA factors (a snapshot: sent at open)."""
        snapshot = Tuning.from_slots([s for s, _ in tuning.slots()], [t.detach().clone() for t in tuning.tensors()],
                                     tuning.lora_scale) if tuning else self._served_adapter()
        remote = RemoteInferenceSession(self.client, self.model, self.num_blocks, self.span,
                                        batch_size, max_length, dtype, self.transport, self.verification,
                                        snapshot)
        return InferenceSession(remote, self.loop)

    def _served_adapter(self) -> Tuning | None:
        name = self.client.config.adapter
        return Tuning(adapter=name) if name else None

    # ---- async work on the client loop ------------------------------------------

    async def run_forward(self, span: BlockRange, hidden: torch.Tensor, mask: torch.Tensor | None,
                          tuning: Tuning | None = None, training: bool = False) -> tuple[torch.Tensor, list[_Hop]]:
        """The output after `span`, and the hops that computed it. `training`: a backward will
        follow, so each server is asked to keep its graph for it (saves recomputing the forward)."""
        hops: list[_Hop] = []
        position, x, retries = span.start, hidden, 0
        while position < span.end:
            route, addresses = await self.client.route(
                self.model, self.num_blocks, BlockRange(position, span.end), 0, forward=True
            )
            for segment in route.segments:
                address = addresses[segment.server_id]
                part = _digested(tuning.restricted(segment.blocks)) if tuning else None
                pass_id = secrets.token_hex(16) if training else ""
                call = ForwardCall(self.model, segment.blocks, (x,) if mask is None else (x, mask), part or None,
                                   pass_id=pass_id)
                try:
                    y = await self.transport.forward(address, call, self.client.config.forward_timeout)
                    check_finite(y, address, f"forward through blocks {segment.blocks}")
                except SwarmError as error:
                    retries = self._failed(segment.server_id, address, error, retries)
                    break
                hops.append(_Hop(segment.server_id, address, segment.blocks, x, part or None, pass_id))
                x, position = y, segment.blocks.end
        return x, hops

    async def run_backward(self, hops: list[_Hop], grad: torch.Tensor, mask: torch.Tensor | None
                           ) -> tuple[torch.Tensor, dict[TuningSlot, torch.Tensor]]:
        """The input gradient, and the gradient of each tuning tensor by its slot."""
        retries = 0
        tuning_grads: dict[TuningSlot, torch.Tensor] = {}
        for hop in reversed(hops):
            tensors = (hop.inputs, grad) if mask is None else (hop.inputs, grad, mask)
            try:
                grad, grads = await self._backward_call(hop, tensors)
                check_finite(grad, hop.address, f"backward through blocks {hop.blocks}")
                tuning_grads.update(zip([s for s, _ in hop.tuning.slots()] if hop.tuning else [], grads))
            except SwarmError as error:
                retries = self._failed(hop.server_id, hop.address, error, retries)
                # recompute this hop's blocks elsewhere, then go back through them
                _, fresh = await self.run_forward(hop.blocks, hop.inputs, mask, hop.tuning, training=True)
                grad, grads_elsewhere = await self.run_backward(fresh, grad, mask)
                tuning_grads.update(grads_elsewhere)
        return grad, tuning_grads

    async def _backward_call(self, hop: _Hop, tensors: tuple[torch.Tensor, ...]
                             ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Backward through one hop; its tuning by reference to what the Forward sent (the
        tensors again if the server no longer has them, or anything else went wrong)."""
        timeout = self.client.config.forward_timeout
        call = ForwardCall(self.model, hop.blocks, tensors, hop.tuning, pass_id=hop.pass_id)
        if hop.tuning is not None and hop.tuning.digest:
            try:
                return await self.transport.backward(hop.address, replace(call, tuning_by_reference=True), timeout)
            except SwarmError as error:
                logger.info("backward by tuning digest on %s failed (%s); sending the tensors", hop.address, error)
        return await self.transport.backward(hop.address, call, timeout)

    def _failed(self, server_id: str, address: str, error: SwarmError, retries: int) -> int:
        if not fails_over(error) or retries >= self.client.config.max_retries:
            raise error
        logger.warning("server %s failed a batch call (%s); re-routing", server_id[:8], error)
        self.client.ban(server_id, address, error)
        return retries + 1


def _digested(tuning: Tuning) -> Tuning:
    """Tensors with their content digest (servers keep them under it for the Backward call)."""
    if not tuning or tuning.adapter:
        return tuning
    return replace(tuning, digest=content_digest(tuning))


class _RemoteFunction(torch.autograd.Function):
    """Forward/Backward calls as one differentiable op over hidden states and tuning tensors."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, mask: torch.Tensor | None, module: RemoteSequential,
                layout: tuple[list[TuningSlot], float, str], *tensors: torch.Tensor) -> torch.Tensor:
        slots, scale, adapter = layout
        tuning = Tuning.from_slots(slots, [t.detach() for t in tensors], scale) if slots else None
        tuning = Tuning(adapter=adapter) if adapter else tuning
        training = any(ctx.needs_input_grad)  # (torch.enable_grad with inputs that need gradients)
        out, hops = module.loop.run(module.run_forward(module.span, hidden.detach(), mask, tuning, training))
        ctx.module, ctx.hops, ctx.mask, ctx.slots = module, hops, mask, slots
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        module: RemoteSequential = ctx.module
        grad, by_slot = module.loop.run(module.run_backward(ctx.hops, grad_output.contiguous(), ctx.mask))
        return (grad, None, None, None, *(by_slot[slot] for slot in ctx.slots))
