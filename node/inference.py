"""One inference session: the life of an `Inference` stream on the server.

open -> (step)* -> close. The session reserves batch_size x max_length cache tokens for
its lifetime, keeps its own KV cache for the requested sub-range of blocks, answers each
step with the hidden states after those blocks, and ends on close, on an error, on idle
timeout or when the client goes away.

Steps reach a session from its client's stream or, in a chained route, pushed by the
previous server (`push`); both land in the session's inbox and are processed in order.
After a step that names next hops, the output is pushed to the next server (over one
stream per next session, `node.push_client`) before the client gets its copy, so the
chain is not slowed by the client's link. A decode-sized step that asks for it
(`defer_copy`) has its copy held and sent later, with others in one `InferenceResults`:
when MAX_RESULTS_BATCH are held, when no step came for COPY_HOLD_S, or ahead of the next
answer that is not held (results always leave in step order). The session waits for its
next step under one deadline (`node.alarm`).
Isolation: a session belongs to the stream that opened it (only that stream steps,
rewinds or closes it) and accepts pushes only with the secret its client chose at open
(`push_capability`, compared in constant time); a push with a wrong or missing secret is
answered exactly like one naming an unknown session. Sessions are told apart by (id,
capability), so opening with an id already in use reveals nothing.
It knows nothing of protobuf or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass

from node.alarm import Alarm
from node.allocator import CacheAllocator, Lease
from node.backend import BlockBackend
from node.config import ServerConfig
from node.error_mapping import SessionTimeout
from node.limits import Overloaded, ShareLedger
from swarm.model.families import SessionCache
from node.metrics import ServerMetrics
from node.push_client import PushClient
from node.state import ServingState
from node.validation import check_blocks, check_next_hops, check_open, check_step
from swarm.errors import CacheExhausted, NotServed, ServerDraining, SessionStateError, SwarmError
from swarm.protocol import (
    COPY_HOLD_S,
    MAX_DEFERRED_TOKENS,
    MAX_RESULTS_BATCH,
    InferenceClose,
    InferenceClosed,
    InferenceOpen,
    InferenceOpened,
    InferenceRequest,
    InferenceResponse,
    InferenceResult,
    InferenceResults,
    InferenceStep,
    PushedStep,
)

logger = logging.getLogger(__name__)

INBOX_SIZE = 16
"""Steps a session may have queued; a chained client never has more than a few."""


class _Deadline:
    """The inbox item `Alarm` puts there: the idle timeout or a held copy's wait is over."""


_DEADLINE = _Deadline()
_Item = InferenceRequest | SwarmError | _Deadline | None  # None: the client's stream ended


def _may_hold(step: InferenceStep, result: InferenceResult) -> bool:
    """Whether the copy of a step's output may wait (`defer_copy`): the step went on by a
    push (its next server has it), and it is decode-sized (what is held stays small)."""
    hidden = step.hidden_states
    return (step.defer_copy and bool(step.next_hops) and not result.push_failed
            and hidden.shape[0] * hidden.shape[1] <= MAX_DEFERRED_TOKENS)


@dataclass(eq=False)
class _Live:
    """An open session as pushes find it."""

    capability: str
    inbox: asyncio.Queue[_Item]


def _unknown(session_id: str) -> NotServed:
    """The one answer to a push that cannot go in: unknown id or wrong capability alike."""
    return NotServed(f"no open session {session_id!r} on this server (unknown or closed)")


class InferenceSessions:
    """Serves inference streams over one backend."""

    def __init__(
        self,
        backend: BlockBackend,
        allocator: CacheAllocator,
        state: ServingState,
        config: ServerConfig,
        server_id: str,
        metrics: ServerMetrics,
        pusher: PushClient,
    ) -> None:
        self.metrics = metrics
        self.backend = backend
        self.allocator = allocator
        self.state = state
        self.config = config
        self.server_id = server_id
        self.pusher = pusher
        self.tuning_bytes = ShareLedger(config.max_tuning_bytes, config.max_tuning_bytes // 2)
        """Bytes of deep prompts and LoRA factors held by open sessions, in all and per client address."""
        """Pushes steps to next hops (with the swarm's TLS and token in a private swarm)."""
        self._live: dict[str, list[_Live]] = {}
        """Open sessions by id (ids may repeat: a session is its id and its capability)."""
        self.own_addresses: frozenset[str] = frozenset()
        """This server's addresses: next hops naming them are refused."""
        self._epoch = 0  # bumped when the server moves to other blocks

    def retire_open_sessions(self) -> None:
        """Open sessions end at their next message (their blocks are going away)."""
        self._epoch += 1

    async def _first(self, requests: AsyncIterator[InferenceRequest]) -> InferenceRequest | None:
        try:
            return await asyncio.wait_for(anext(requests, None), self.config.session_idle_timeout)
        except TimeoutError:
            raise SessionTimeout("no open message; session closed") from None

    def push(self, pushed: PushedStep) -> None:
        """Queues a step pushed by the previous server of a chain."""
        offered = pushed.capability.encode("utf-8")
        for live in self._live.get(pushed.session_id, ()):
            if live.capability and hmac.compare_digest(live.capability.encode("ascii"), offered):
                try:
                    live.inbox.put_nowait(pushed.step)
                except asyncio.QueueFull:
                    raise SessionStateError(f"session {pushed.session_id} has {INBOX_SIZE} steps queued") from None
                return
        raise _unknown(pushed.session_id)

    async def serve(self, requests: AsyncIterator[InferenceRequest], peer: str = ""
                    ) -> AsyncIterator[InferenceResponse]:
        """Serves one Inference stream from client address `peer` (see `node.limits.peer_of`)."""
        first = await self._first(requests)
        if first is None:
            return
        if not isinstance(first, InferenceOpen):
            raise SessionStateError("a session must start with an open message, got a "
                                    f"{type(first).__name__.removeprefix('Inference').lower()}")
        check_blocks(first.model, first.blocks, self.state.model_name, self.state.blocks)
        check_open(first, self.config.max_batch_size, self.config.max_session_length)
        if first.tuning is not None:
            self.backend.check_tuning(first.tuning, first.blocks, first.batch_size)
        self.state.check_accepting()
        who = f"{first.session_id or '?'}[{first.blocks}]"
        tokens = first.batch_size * first.max_length
        closed: InferenceClosed | None = None
        with self.state.session(), self.metrics.sessions_open.track_inprogress(), \
                self._tuning_held(peer, first):
            async with self.allocator.reserve(tokens, self.config.max_alloc_timeout, who, peer) as lease:
                logger.info("session %s opened: batch %d, max_length %d", who, first.batch_size,
                            first.max_length)
                yield InferenceOpened(self.server_id, tokens)
                pusher_key = uuid.uuid4().hex  # owns this session's push streams (ids may repeat)
                try:
                    async with self._inbox(first, requests, lease) as inbox, \
                            contextlib.aclosing(self._steps(first, inbox, who, pusher_key, lease)) as steps:
                        async for response in steps:
                            if isinstance(response, InferenceClosed):
                                closed = response
                                break
                            yield response
                finally:
                    await self.pusher.release(pusher_key)
        logger.info("session %s ended", who)
        if closed is not None:
            # only now: a client told "closed" finds the session gone (a push to it is
            # NOT_FOUND) and its cache reservation given back
            yield closed

    @contextlib.contextmanager
    def _tuning_held(self, peer: str, open_: InferenceOpen) -> Iterator[None]:
        """A session's prompts and LoRA factors count against the server's tuning budget."""
        nbytes = open_.tuning.nbytes() if open_.tuning else 0
        if not nbytes:
            yield
            return
        if not self.tuning_bytes.try_take(peer, nbytes):
            raise Overloaded(f"session tuning of {nbytes} bytes refused: {self.tuning_bytes.refusal(peer, nbytes)} "
                             "(bytes of deep prompts and LoRA factors held by sessions); retry later")
        try:
            yield
        finally:
            self.tuning_bytes.release(peer, nbytes)

    @contextlib.asynccontextmanager
    async def _inbox(self, open_: InferenceOpen, requests: AsyncIterator[InferenceRequest], lease: Lease
                     ) -> AsyncIterator[asyncio.Queue[_Item]]:
        """The session's inbox, fed by its client's stream, by pushes and by eviction."""
        session_id = open_.session_id
        inbox: asyncio.Queue[_Item] = asyncio.Queue(INBOX_SIZE)
        live = _Live(open_.push_capability, inbox)

        def evict() -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a full inbox is not idle: never evicted
                inbox.put_nowait(CacheExhausted(
                    f"session {session_id} closed to give cache room to a waiting session: it was idle "
                    f"for {self.allocator.evict_idle:g} s or held room beyond its address's share"))

        lease.on_evict = evict

        async def pump() -> None:
            try:
                async for request in requests:
                    await inbox.put(request)
            except SwarmError as error:  # e.g. a malformed message: end the session with it
                await inbox.put(error)
                return
            await inbox.put(None)

        self._live.setdefault(session_id, []).append(live)
        reader = asyncio.create_task(pump(), name=f"session-{session_id}-reader")  # owned, cancelled below
        try:
            yield inbox
        finally:
            lives = self._live[session_id]
            lives.remove(live)
            if not lives:
                del self._live[session_id]
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _steps(self, open_: InferenceOpen, inbox: asyncio.Queue[_Item], who: str, pusher_key: str,
                     lease: Lease) -> AsyncGenerator[InferenceResponse, None]:
        cache = self.backend.new_cache(open_.blocks)
        epoch = self._epoch
        held: list[InferenceResult] = []  # copies held back for defer_copy, in step order
        alarm = Alarm(inbox, _DEADLINE)
        try:
            while True:
                alarm.set(COPY_HOLD_S if held else self.config.session_idle_timeout)
                item = await inbox.get()
                if item is _DEADLINE and not alarm.passed():
                    continue  # stale: put there before a step that moved the deadline on
                if item is None or isinstance(item, InferenceClose):
                    if item is not None:
                        yield InferenceClosed()
                    return  # (a client that went away without close: free everything quietly)
                if item is not _DEADLINE:
                    step = self._checked(item, open_, who, epoch)
                    lease.busy()
                    result = await self._step(open_, step, cache, pusher_key)
                    lease.idle()
                    hold = _may_hold(step, result)
                    if not held and not hold:
                        yield result
                        continue
                    held.append(result)  # (an answer not held goes out with those held, in order)
                    if hold and len(held) < MAX_RESULTS_BATCH:
                        continue
                elif not held:
                    raise SessionTimeout(f"session idle for more than {self.config.session_idle_timeout:g} s; "
                                         "closed")
                # a batch is full, an answer is due, or no step came for a while (the client
                # may be waiting for these copies): send what is held
                yield InferenceResults(tuple(held))
                held.clear()
        finally:
            alarm.cancel()

    def _checked(self, item: _Item, open_: InferenceOpen, who: str, epoch: int) -> InferenceStep:
        """The step an inbox item is, or the error that ends the session."""
        if isinstance(item, SwarmError):
            raise item
        if isinstance(item, InferenceOpen):
            raise SessionStateError(f"session {who} is already open")
        if not isinstance(item, InferenceStep):
            raise SessionStateError(f"session {who} got an unexpected {type(item).__name__}")
        if epoch != self._epoch:
            raise ServerDraining(f"this server moved away from blocks {open_.blocks}; session {who} "
                                 "must continue elsewhere")
        return item

    async def _step(self, open_: InferenceOpen, step: InferenceStep, cache: SessionCache, pusher_key: str
                    ) -> InferenceResult:
        check_step(step, open_, self.backend.cache_length(cache), self.backend.hidden_size)
        check_next_hops(step.next_hops, self.own_addresses)
        began = time.perf_counter()
        out = await self.backend.step(cache, open_.blocks, step.hidden_states, step.start_position,
                                      step.position_ids, step.attention_mask, open_.tuning)
        seconds = time.perf_counter() - began
        push_failed = False
        if step.next_hops:  # first: the next server waits for it (the counters can wait)
            hop, rest = step.next_hops[0], step.next_hops[1:]
            onward = InferenceStep(step.step_id, out, step.start_position, step.position_ids,
                                   step.attention_mask, rest, step.defer_copy)
            pushed = PushedStep(hop.session_id, onward, hop.capability, compression=open_.compression)
            push_failed = not await self.pusher.push(pusher_key, hop.address, pushed)
            if push_failed:
                self.metrics.pushes_failed.inc()
        self.metrics.step_seconds.observe(seconds)  # (after the push: the next server waits for that)
        self.metrics.steps.inc()
        self.metrics.step_tokens.inc(step.hidden_states.shape[0] * step.hidden_states.shape[1])
        return InferenceResult(step.step_id, out, push_failed, compression=open_.compression)
