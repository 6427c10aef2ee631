"""One inference session: the life of an `Inference` stream on the server.

open -> (step)* -> close. The session reserves batch_size x max_length cache tokens for
its lifetime, keeps its own KV cache for the requested sub-range of blocks, answers each
step with the hidden states after those blocks, and ends on close, on an error, on idle
timeout or when the client goes away. It knows nothing of protobuf or gRPC.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from node.allocator import CacheAllocator
from node.backend import BlockBackend
from node.config import ServerConfig
from node.error_mapping import SessionTimeout
from node.state import ServingState
from node.validation import check_blocks, check_open, check_step
from swarm.errors import SessionStateError
from swarm.protocol import (
    InferenceClose,
    InferenceClosed,
    InferenceOpen,
    InferenceOpened,
    InferenceRequest,
    InferenceResponse,
    InferenceResult,
    InferenceStep,
)

logger = logging.getLogger(__name__)


class InferenceSessions:
    """Serves inference streams over one backend."""

    def __init__(
        self,
        backend: BlockBackend,
        allocator: CacheAllocator,
        state: ServingState,
        config: ServerConfig,
        server_id: str,
    ) -> None:
        self.backend = backend
        self.allocator = allocator
        self.state = state
        self.config = config
        self.server_id = server_id

    async def _next(self, requests: AsyncIterator[InferenceRequest]) -> InferenceRequest | None:
        try:
            return await asyncio.wait_for(anext(requests, None), self.config.session_idle_timeout)
        except TimeoutError:
            raise SessionTimeout(
                f"session idle for more than {self.config.session_idle_timeout:g} s; closed"
            ) from None

    async def serve(self, requests: AsyncIterator[InferenceRequest]) -> AsyncIterator[InferenceResponse]:
        first = await self._next(requests)
        if first is None:
            return
        if not isinstance(first, InferenceOpen):
            raise SessionStateError("a session must start with an open message, got a "
                                    f"{type(first).__name__.removeprefix('Inference').lower()}")
        check_blocks(first.model, first.blocks, self.state.model_name, self.state.blocks)
        check_open(first, self.config.max_batch_size, self.config.max_session_length)
        self.state.check_accepting()
        who = f"{first.session_id or '?'}[{first.blocks}]"
        tokens = first.batch_size * first.max_length
        with self.state.session():
            async with self.allocator.reserve(tokens, self.config.max_alloc_timeout, who):
                logger.info("session %s opened: batch %d, max_length %d", who, first.batch_size,
                            first.max_length)
                yield InferenceOpened(self.server_id, tokens)
                async for response in self._steps(first, requests, who):
                    yield response
        logger.info("session %s ended", who)

    async def _steps(
        self, open_: InferenceOpen, requests: AsyncIterator[InferenceRequest], who: str
    ) -> AsyncIterator[InferenceResponse]:
        cache = self.backend.new_cache(open_.blocks)
        while True:
            request = await self._next(requests)
            if request is None:
                return  # client went away without close: free everything quietly
            if isinstance(request, InferenceClose):
                yield InferenceClosed()
                return
            if isinstance(request, InferenceOpen):
                raise SessionStateError(f"session {who} is already open")
            yield await self._step(open_, request, cache)

    async def _step(self, open_: InferenceOpen, step: InferenceStep, cache: object) -> InferenceResult:
        cached = self.backend.cache_length(cache)  # type: ignore[arg-type]
        check_step(step, open_, cached, self.backend.hidden_size)
        out = await self.backend.step(
            cache,  # type: ignore[arg-type]
            open_.blocks,
            step.hidden_states,
            step.start_position,
            step.position_ids,
            step.attention_mask,
        )
        return InferenceResult(step.step_id, out)
