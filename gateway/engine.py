"""Generation through the swarm, off the event loop: prompts in, token events out.

The swarm client is synchronous-facing (its network work runs on its own loop thread,
`client.runtime`), and each decoding step also runs the local embeddings and LM head in
torch. So every generation runs in a worker thread of one bounded pool; its tokens reach
the asyncio side through a queue (`call_soon_threadsafe`), and the HTTP and gRPC servers
stay free to take other requests. A consumer that goes away (a closed connection)
cancels its generation at the next token, which closes its inference session.

Decoding is the same as `swarm generate`'s for greedy (argmax of the LM head's logits of
the same steps); sampling uses transformers' temperature and top-p warpers and a
per-request torch.Generator, so seeds are reproducible under concurrency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from gateway.metrics import GatewayMetrics
from gateway.sampling import Sampling
from gateway.text_stream import TextStream

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenEvent:
    """One generated token and the text it released ("" while held back)."""

    token_id: int
    text: str


@dataclass(frozen=True)
class FinishEvent:
    """The end of a generation: why, and how many tokens."""

    reason: str
    """"stop" (end-of-sequence token or stop string) or "length" (max_tokens)."""
    prompt_tokens: int
    completion_tokens: int
    text: str
    """Text held back until the end (the tail of the answer), usually ""."""


Event = TokenEvent | FinishEvent


class _Cancelled(Exception):
    """The consumer went away; the worker stops at its next token."""


class SwarmModel(Protocol):
    """What the engine needs of `client.model.DistributedModelForCausalLM` (tests fake it)."""

    head: Any
    layers: Any
    model_name: str

    @property
    def dtype(self) -> torch.dtype: ...


class Engine:
    """Runs generations on a swarm model, `max_concurrent` at a time."""

    def __init__(self, model: SwarmModel, tokenizer: Any, eos_token_ids: Sequence[int], max_concurrent: int,
                 metrics: GatewayMetrics) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self.metrics = metrics
        self.max_context = int(getattr(model.head.config, "max_position_embeddings", 0) or 0)
        """Most tokens a session may hold (prompt + answer); 0: unknown, not checked."""
        self._pool = concurrent.futures.ThreadPoolExecutor(max_concurrent, thread_name_prefix="generate")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    async def stream(self, prompt_ids: Sequence[int], sampling: Sampling, api: str) -> AsyncGenerator[Event, None]:
        """Token events of one generation, then one FinishEvent; swarm errors are raised."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Event | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        began = time.perf_counter()
        future = loop.run_in_executor(self._pool, self._generate, list(prompt_ids), sampling, emit, cancelled)
        first = True
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if first and isinstance(item, TokenEvent):
                    self.metrics.time_to_first_token.labels(api).observe(time.perf_counter() - began)
                    first = False
                yield item
                if isinstance(item, FinishEvent):
                    self.metrics.tokens.labels("prompt").inc(item.prompt_tokens)
                    self.metrics.tokens.labels("completion").inc(item.completion_tokens)
                    return
        finally:
            cancelled.set()  # a no-op after the end; stops the worker if the consumer left
            future.add_done_callback(_log_worker_failure)

    def _generate(self, prompt_ids: list[int], sampling: Sampling, emit: Callable[[Event | BaseException], None],
                  cancelled: threading.Event) -> None:
        """The worker: decodes token by token, emitting events (or the error that ended it)."""
        try:
            if cancelled.is_set():  # the consumer left while this waited for a free thread
                raise _Cancelled()
            text = TextStream(self.decode, sampling.stop)
            reason = self._decode(prompt_ids, sampling, text, emit, cancelled)
            emit(FinishEvent(reason, len(prompt_ids), len(text.token_ids), text.finish()))
        except _Cancelled:
            logger.info("generation cancelled after its consumer left")
        except Exception as error:  # handed to the consumer, which maps it to a status
            emit(error)

    def _decode(self, prompt_ids: list[int], sampling: Sampling, text: TextStream,
                emit: Callable[[Event | BaseException], None], cancelled: threading.Event) -> str:
        head, steps = self.model.head, sampling.max_tokens
        warpers = _warpers(sampling)
        generator = torch.Generator().manual_seed(
            sampling.seed % 2**64 if sampling.seed is not None else random.getrandbits(64))
        ids = torch.tensor([prompt_ids], dtype=torch.long)
        positions = torch.arange(len(prompt_ids))[None]
        mask = torch.ones_like(ids)
        with self.model.layers.inference_session(len(prompt_ids) + steps, 1, self.model.dtype) as session:
            for _ in range(steps):
                with torch.inference_mode():
                    hidden = session.step(head.embed(ids), positions, mask)
                    logits = head.logits(hidden[:, -1]).to(torch.float32)
                token = _choose(logits, sampling, warpers, generator, ids)
                if cancelled.is_set():
                    raise _Cancelled()
                if token in self.eos_token_ids:
                    return "stop"
                emit(TokenEvent(token, text.add(token)))
                if text.stopped:
                    return "stop"
                ids = torch.tensor([[token]])
                positions = positions[:, -1:] + 1
                mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
        return "length"


def _warpers(sampling: Sampling) -> LogitsProcessorList:
    """transformers' warpers in its order (temperature, then top-p), as `generate` applies them."""
    warpers = LogitsProcessorList()
    if not sampling.greedy:
        if sampling.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=sampling.top_p, min_tokens_to_keep=1))
    return warpers


def _choose(logits: torch.Tensor, sampling: Sampling, warpers: LogitsProcessorList,
            generator: torch.Generator, ids: torch.Tensor) -> int:
    """The next token: argmax when greedy, else a draw from the warped distribution."""
    if sampling.greedy:
        return int(torch.argmax(logits, dim=-1)[0])
    scores = warpers(cast(torch.LongTensor, ids), logits)  # temperature and top-p do not look at the ids
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=generator)[0, 0])


def _log_worker_failure(future: concurrent.futures.Future[None] | asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("generation worker failed: %s", future.exception())
