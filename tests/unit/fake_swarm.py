"""An in-memory swarm for session tests: a fake `Transport` and `RouteSource`, no sockets.

Each fake server holds a block range and computes a deterministic stand-in for
transformer blocks with a KV cache: block k maps the hidden states h of a step at
positions s.. to h + k + 0.01 * (running sum of everything that entered block k so
far). Any split of the blocks over servers gives the same output, and an output is
right only if each block's cache holds exactly the history the client sent (a missing or
doubled replay changes every later token).

A server is scripted with one `Fault` at its n-th handled step (replays and pushed steps
count): die, drain, reject the input, hang, answer late, drop its push, die after
answering, send the client its copy after its push has gone on (so the last server's
answer comes first); or it refuses to open sessions at all (busy), or rejects the open request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import torch

from client.config import ClientConfig
from client.routing import Route
from client.routing.model import Segment
from swarm.errors import (
    NoRoute,
    PeerBusy,
    PeerUnavailable,
    RemoteInvalidInput,
    SwarmError,
)
from swarm.protocol import (
    MAX_RESULTS_BATCH,
    ForwardCall,
    InferenceOpen,
    InferenceResult,
    InferenceStep,
    NextHop,
    ServerInfo,
)
from swarm.records import BlockRange

FaultKind = Literal["die", "drain", "invalid", "hang", "late", "drop_push", "die_after", "refuse_open",
                    "reject_open", "nan", "lie", "slow_copy"]

LATE_S = 0.12
"""How late a "late" server answers (tests use a step timeout well below it)."""

SLOW_COPY_S = 0.02
"""How late a "slow_copy" server's result reaches the client (its push goes at once)."""

HOLD_S = 0.01
"""How long a copy held for defer_copy waits for more (swarm.protocol.COPY_HOLD_S: 0.2 s; here below
the tests' step timeouts, as there below real ones)."""


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    at: int = 0
    """The server's handled-step index (0 = its first) at which the fault strikes."""


def run_blocks(caches: dict[int, torch.Tensor], blocks: BlockRange, hidden: torch.Tensor,
               start: int) -> torch.Tensor:
    """The fake blocks' output for a step at positions start.. (caches updated in place)."""
    h = hidden.clone()
    end = start + h.shape[1]
    for k in range(blocks.start, blocks.end):
        cache = caches[k]
        cache[:, start:end] = h
        h = h + k + 0.01 * cache[:, :end].cumsum(dim=1)[:, start:end]
    return h


def new_caches(blocks: BlockRange, batch: int, max_length: int, hidden: int) -> dict[int, torch.Tensor]:
    return {k: torch.zeros(batch, max_length, hidden) for k in range(blocks.start, blocks.end)}


@dataclass(eq=False)
class FakeServer:
    server_id: str
    blocks: BlockRange
    rank: int = 0
    """Routes prefer the lowest rank (primaries 0, backups 1, 2, ...)."""
    fault: Fault | None = None
    handled: int = 0
    down: bool = False
    """Dead, draining or hung: opens fail and steps are dropped."""
    opened: list[FakeStream] = field(default_factory=list)
    late_results: int = 0
    """Results this server posted after the client had dropped its stream."""

    @property
    def address(self) -> str:
        return f"fake://{self.server_id}"

    def next_fault(self) -> FaultKind | None:
        index, self.handled = self.handled, self.handled + 1
        return self.fault.kind if self.fault is not None and self.fault.at == index else None


class FakeStream:
    """One open session on a fake server (implements `client.transport.InferenceStream`)."""

    def __init__(self, server: FakeServer, request: InferenceOpen, transport: FakeTransport) -> None:
        self.server, self.request, self.transport = server, request, transport
        self.address, self.server_id = server.address, server.server_id
        self.caches = new_caches(request.blocks, request.batch_size, request.max_length, HIDDEN)
        self.client_steps: list[int] = []
        """Step ids the client sent here itself (pushed steps are not in it)."""
        self._queue: asyncio.Queue[InferenceResult | SwarmError] = asyncio.Queue()
        self._error: SwarmError | None = None
        self.aborted = False
        self.held: list[InferenceResult] = []
        """Copies held for defer_copy (a server that dies loses them)."""
        self.batches: list[int] = []
        """Sizes of the batches of held copies sent so far."""
        self._hold_timer: asyncio.TimerHandle | None = None

    # ---- the server side --------------------------------------------------------------

    def deliver(self, step: InferenceStep) -> None:
        """A step arrives (from the client or pushed by the previous server)."""
        if self.server.down or self._error is not None or self.aborted:
            return
        fault = self.server.next_fault()
        if fault in ("die", "drain", "invalid"):
            self._fail(fault)
            return
        if fault == "hang":
            self.server.down = True
            return
        out = run_blocks(self.caches, self.request.blocks, step.hidden_states, step.start_position)
        if fault == "nan" or (self.server.fault is not None and self.server.fault.kind == "lie"
                              and self.server.handled > self.server.fault.at):
            out = torch.full_like(out, float("nan")) if fault == "nan" else out + 1.0
        pushed = bool(step.next_hops) and fault != "drop_push"
        if pushed:
            self.transport.push(step.next_hops, InferenceStep(step.step_id, out, step.start_position,
                                                              step.position_ids, step.attention_mask,
                                                              defer_copy=step.defer_copy))
        result = InferenceResult(step.step_id, out, push_failed=bool(step.next_hops) and not pushed)
        loop = asyncio.get_running_loop()
        if pushed and step.defer_copy and fault is None:
            self._hold(result)
            return
        self._release()  # held copies go first, in step order
        if fault == "late":
            self.server.down = True
            loop.call_later(LATE_S, self._post_late, result)
            return
        if fault == "slow_copy":
            loop.call_later(SLOW_COPY_S, self._queue.put_nowait, result)
            return
        loop.call_soon(self._queue.put_nowait, result)
        if fault == "die_after":
            self.server.down = True
            loop.call_soon(self._fail, "die")

    def _hold(self, result: InferenceResult) -> None:
        """As a server does for defer_copy: the copy waits for more, HOLD_S at most."""
        self.held.append(result)
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if len(self.held) >= MAX_RESULTS_BATCH:
            self._release()
        else:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_S, self._release)

    def _release(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self.held and not self.server.down and self._error is None:
            self.batches.append(len(self.held))
            for result in self.held:
                self._queue.put_nowait(result)
        self.held.clear()

    def _fail(self, kind: FaultKind) -> None:
        self.server.down = kind != "invalid"
        message = f"{self.address}: {kind}"
        if kind == "invalid":
            self._error = RemoteInvalidInput(message, code="INVALID_ARGUMENT", peer=self.address)
        else:  # a dead server's connection and a draining server both answer UNAVAILABLE
            self._error = PeerUnavailable(f"{message} (draining)" if kind == "drain" else message,
                                          code="UNAVAILABLE", peer=self.address)
        self._queue.put_nowait(self._error)

    def _post_late(self, result: InferenceResult) -> None:
        if self.aborted:
            self.server.late_results += 1
        self._queue.put_nowait(result)

    # ---- InferenceStream -----------------------------------------------------------------

    async def send(self, step: InferenceStep, timeout: float) -> None:
        if self._error is not None:
            raise self._error
        self.client_steps.append(step.step_id)
        self.deliver(step)

    async def receive(self, step_id: int, timeout: float) -> InferenceResult:
        while True:
            item = await asyncio.wait_for(self._queue.get(), timeout)
            if isinstance(item, SwarmError):
                raise item
            if item.step_id >= step_id:
                return item

    async def next_result(self) -> InferenceResult:
        item = await self._queue.get()
        if isinstance(item, SwarmError):
            raise item
        return item

    async def step(self, step: InferenceStep, timeout: float) -> torch.Tensor:
        await self.send(step, timeout)
        return (await self.receive(step.step_id, timeout)).hidden_states

    async def close(self, timeout: float) -> None:
        self.aborted = True

    def abort(self) -> None:
        self.aborted = True


HIDDEN = 4


class FakeTransport:
    """`client.transport.Transport` over `FakeServer`s, by address."""

    def __init__(self, servers: list[FakeServer]) -> None:
        self.servers = {s.address: s for s in servers}
        self.sessions: dict[str, FakeStream] = {}
        self.opens: list[str] = []
        """Server ids a session was opened on, in order."""
        self.forwards: list[str] = []
        """Server ids a Forward call went to, in order."""

    async def open_inference(self, address: str, request: InferenceOpen, timeout: float) -> FakeStream:
        server = self.servers[address]
        self.opens.append(server.server_id)
        if server.down:
            raise PeerUnavailable(f"{address}: connection refused", code="UNAVAILABLE", peer=address)
        if server.fault is not None and server.fault.kind == "refuse_open":
            raise PeerBusy(f"{address}: cache full", code="RESOURCE_EXHAUSTED", peer=address)
        if server.fault is not None and server.fault.kind == "reject_open":
            raise RemoteInvalidInput(f"{address}: batch_size must be...", code="INVALID_ARGUMENT", peer=address)
        stream = FakeStream(server, request, self)
        server.opened.append(stream)
        self.sessions[request.session_id] = stream
        return stream

    def push(self, hops: tuple[NextHop, ...], step: InferenceStep) -> None:
        """Server-to-server: the next session gets the step soon, with the rest of the chain."""
        target = self.sessions[hops[0].session_id]
        onward = InferenceStep(step.step_id, step.hidden_states, step.start_position, step.position_ids,
                               step.attention_mask, hops[1:], step.defer_copy)
        asyncio.get_running_loop().call_soon(target.deliver, onward)

    async def forward(self, address: str, call: ForwardCall, timeout: float) -> torch.Tensor:
        """Stateless: the blocks over the whole sequence from empty caches (a liar lies here too)."""
        server = self.servers[address]
        self.forwards.append(server.server_id)
        if server.down:
            raise PeerUnavailable(f"{address}: connection refused", code="UNAVAILABLE", peer=address)
        hidden = call.tensors[0]
        out = run_blocks(new_caches(call.blocks, hidden.shape[0], hidden.shape[1], hidden.shape[2]),
                         call.blocks, hidden, 0)
        return out + 1.0 if server.fault is not None and server.fault.kind == "lie" else out

    async def backward(self, address: str, call: ForwardCall, timeout: float
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        raise NotImplementedError("sessions only")

    async def info(self, address: str, timeout: float) -> ServerInfo:
        raise NotImplementedError("sessions only")

    async def ping(self, address: str, timeout: float) -> float:
        return 0.001

    async def close(self) -> None:
        pass


class FakeSwarm:
    """`client.route_opener.RouteSource`: greedy routes over unbanned servers, lowest rank first."""

    def __init__(self, servers: list[FakeServer], config: ClientConfig) -> None:
        self.servers = servers
        self.config = config
        self.banned: list[str] = []

    async def route(self, model: str, num_blocks: int, span: BlockRange, session_tokens: int,
                    after: str | None = None, before: str | None = None,
                    forward: bool = False) -> tuple[Route, dict[str, str]]:
        segments, position = [], span.start
        while position < span.end:
            holders = [s for s in self.servers if s.server_id not in self.banned
                       and s.blocks.start <= position < s.blocks.end]
            if not holders:
                raise NoRoute(f"no live server holds block {position} of {model}", model=model, block=position)
            best = min(holders, key=lambda s: (s.rank, s.server_id))
            end = min(best.blocks.end, span.end)
            segments.append(Segment(best.server_id, BlockRange(position, end)))
            position = end
        route = Route(tuple(segments), 0.0)
        return route, {s.server_id: s.address for s in self.servers}

    def ban(self, server_id: str, address: str = "", error: SwarmError | None = None) -> None:
        self.banned.append(server_id)

    def replicas(self, model: str, blocks: BlockRange, exclude: frozenset[str]) -> list[tuple[str, str]]:
        return [(s.server_id, s.address) for s in self.servers
                if s.server_id not in self.banned and s.server_id not in exclude
                and s.blocks.start <= blocks.start and blocks.end <= s.blocks.end]

    def succeeded(self, server_id: str) -> None:
        pass
