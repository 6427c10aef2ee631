"""Runs the served blocks: the only place where the server does torch work.

Every call goes through one single-thread executor so that the event loop keeps serving
other sessions' messages and health checks while a step computes, and so that steps from
many sessions do not fight over the CPU's cores (torch parallelizes inside each op).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from node.families import BlockStack, SessionCache
from node.validation import default_positions
from swarm.records import BlockRange

T = TypeVar("T")


class BlockBackend:
    """Async facade over a `BlockStack`: inference steps, forward and backward passes."""

    def __init__(self, stack: BlockStack) -> None:
        self.stack = stack
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="torch")

    @property
    def hidden_size(self) -> int:
        return self.stack.info.hidden_size

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

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
    ) -> torch.Tensor:
        """Appends `hidden` at cache position `start` (dropping anything after it)."""
        return await self._run(run_step, self.stack, cache, blocks, hidden, start, position_ids, attention_mask)

    async def forward(
        self, blocks: BlockRange, hidden: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return await self._run(self._forward, blocks, hidden, attention_mask)

    def _inputs(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, _ = hidden.shape
        if attention_mask is None:
            mask = torch.ones(batch, tokens, dtype=torch.int64)
        else:
            mask = attention_mask.to(torch.int64)
        # as transformers' generate does for left padding: positions count real tokens only
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return mask, positions

    def _forward(
        self, blocks: BlockRange, hidden: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        mask, positions = self._inputs(hidden, attention_mask)
        with torch.inference_mode():
            out = self.stack.forward(
                hidden.to(self.stack.dtype), blocks=blocks, position_ids=positions,
                attention_mask=mask, cache=None,
            )
        return out.to(hidden.dtype)

    async def backward(
        self,
        blocks: BlockRange,
        hidden: torch.Tensor,
        grad_outputs: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        return await self._run(self._backward, blocks, hidden, grad_outputs, attention_mask)

    def _backward(
        self,
        blocks: BlockRange,
        hidden: torch.Tensor,
        grad_outputs: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        mask, positions = self._inputs(hidden, attention_mask)
        inputs = hidden.detach().to(self.stack.dtype).clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.stack.forward(
                inputs, blocks=blocks, position_ids=positions, attention_mask=mask, cache=None
            )
            (grad,) = torch.autograd.grad(out, inputs, grad_outputs.to(out.dtype))
        return grad.to(hidden.dtype)


def run_step(
    stack: BlockStack,
    cache: SessionCache,
    blocks: BlockRange,
    hidden: torch.Tensor,
    start: int,
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
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
        )
    return out.to(hidden.dtype)
