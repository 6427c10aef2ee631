"""The session's failover state machine, table-driven over an in-memory swarm (no sockets).

Each case scripts the fake servers of `tests.unit.fake_swarm` (one fault each at most),
runs a prompt and a few decoding steps through a `RemoteInferenceSession` and checks:
the outputs equal a failure-free computation; which servers were banned; how many
failovers happened; that the client never sent a step twice to one stream; and that
every live session's cache equals the reference cache (the replayed history is exactly
what was sent). All cases together take well under 2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest
import torch

from client.config import ClientConfig
from client.inference_session import RemoteInferenceSession
from client.routing import RoutingConfig
from swarm.errors import NoRoute, PeerUnavailable, RemoteInvalidInput, SwarmError
from swarm.protocol import MAX_STEP_HOPS
from swarm.records import BlockRange
from tests.unit.fake_swarm import (
    HIDDEN,
    LATE_S,
    FakeServer,
    FakeStream,
    FakeSwarm,
    FakeTransport,
    Fault,
    new_caches,
    run_blocks,
)

NUM_BLOCKS = 6
PUSH_WINDOW_TEST = MAX_STEP_HOPS + 1
"""Segments a step crosses on pushes alone before it comes back to the client."""
MAX_LENGTH = 16
PROMPT, DECODE = 3, 4
"""Prompt tokens, then single-token steps."""


@dataclass(frozen=True)
class Case:
    name: str
    servers: tuple[tuple[str, str, int, Fault | None], ...]
    """(server id, blocks "a:b", rank, fault) of each fake server."""
    chained: bool = True
    banned: tuple[str, ...] = ()
    recoveries: int = 0
    raises: type[SwarmError] | None = None
    sent: tuple[tuple[str, int], ...] = ()
    """(server id, steps the client itself sent it, replays included) for the servers listed."""
    verify: float = 0.0
    """verify_fraction."""
    outvoted: tuple[str, ...] = ()
    """Servers verification caught lying (session.verification.banned)."""
    unresolved: int = 0


def _three(fault_on: str = "", fault: Fault | None = None, *, backups: str = "a2 b2 c2") -> tuple[
        tuple[str, str, int, Fault | None], ...]:
    """Primaries a (0:2), b (2:4), c (4:6) and rank-1 backups; `fault_on` gets `fault`."""
    spans = {"a": "0:2", "b": "2:4", "c": "4:6"}
    primaries = [(name, span, 0, fault if name == fault_on else None) for name, span in spans.items()]
    spare = [(name, spans[name[0]], 1, fault if name == fault_on else None) for name in backups.split()]
    return tuple(primaries + spare)


CASES = [
    Case("no failures, chained", _three(), sent=(("a", 5), ("b", 0), ("c", 0))),
    Case("no failures, client relays", _three(), chained=False, sent=(("a", 5), ("b", 5), ("c", 5))),
    Case("middle server dies mid-decode", _three("b", Fault("die", 2)), banned=("b",), recoveries=1),
    Case("last server dies, client relays", _three("c", Fault("die", 3)), chained=False, banned=("c",),
         recoveries=1),
    Case("first server dies on the prompt", _three("a", Fault("die", 0)), banned=("a",), recoveries=1),
    Case("draining server is failed over", _three("b", Fault("drain", 1)), banned=("b",), recoveries=1),
    Case("silent server: step timeout fails over", _three("b", Fault("hang", 2)), banned=("b",),
         recoveries=1),
    Case("late answer from a replaced server is ignored", _three("a", Fault("late", 2)), chained=False,
         banned=("a",), recoveries=1),
    Case("server dies after answering: replaced at the next step", _three("c", Fault("die_after", 1)),
         banned=("c",), recoveries=1),
    Case("push failure is relayed by the client", _three("a", Fault("drop_push", 2)),
         sent=(("a", 5), ("b", 1), ("c", 0))),
    Case("replacement dies during replay",
         _three("b", Fault("die", 2)) + (("b2", "2:4", 1, Fault("die", 0)), ("b3", "2:4", 2, None)),
         banned=("b", "b2"), recoveries=1, sent=(("b2", 1), ("b3", 2))),
    Case("invalid input is raised at once, never failed over", _three("b", Fault("invalid", 1)),
         raises=RemoteInvalidInput),
    Case("no server left for the lost blocks", _three("b", Fault("die", 2), backups="a2 c2"),
         banned=("b",), raises=NoRoute),
    Case("an open request rejected as invalid is raised, not retried", _three("b", Fault("reject_open")),
         raises=RemoteInvalidInput),
    Case("a server that refuses to open is routed around", _three("b", Fault("refuse_open")),
         banned=("b",)),
    Case("two servers of the chain fail in one step", _three("c", Fault("die", 2))
         + (("b", "2:4", 0, Fault("die_after", 2)),), banned=("c", "b"), recoveries=2),
    Case("a middle server dies holding copies, then the next one dies: its replay is exact",
         _three("b", Fault("die", 3)) + (("c", "4:6", 0, Fault("die", 4)),), banned=("b", "c"), recoveries=2),
    # output checks: NaN/Inf never becomes a token; verification outvotes a liar
    Case("NaN from a middle server (pushed on) blames it, not the next one", _three("b", Fault("nan", 2)),
         banned=("b",), recoveries=1),
    Case("NaN from the first server on the prompt", _three("a", Fault("nan", 0)), chained=False,
         banned=("a",), recoveries=1),
    Case("NaN from the last server", _three("c", Fault("nan", 3)), banned=("c",), recoveries=1),
    Case("a lying session server is outvoted, replaced, the step redone",
         _three("b", Fault("lie", 0), backups="a2 b2 b3 c2"), verify=1.0, banned=("b",), recoveries=1,
         outvoted=("b",)),
    Case("a lying replica is outvoted when asked as a witness",
         _three("b2", Fault("lie", 0), backups="a2 b2 b3 c2"), verify=1.0, banned=("b2",), outvoted=("b2",)),
    Case("a liar with one honest replica: unresolved, nobody banned",
         _three("b2", Fault("lie", 0), backups="b2"), verify=1.0, unresolved=1 + DECODE),
    Case("verified step whose middle copy comes after the last server's answer",
         _three("b", Fault("slow_copy", 2), backups="a2 b2 c2"), verify=1.0),
    Case("verification off: a liar goes unnoticed", _three("b", Fault("lie", 0), backups="a2 b2 b3 c2"),
         raises=AssertionError),
]


def _make(case: Case) -> tuple[list[FakeServer], FakeSwarm, FakeTransport]:
    servers: dict[str, FakeServer] = {}
    for server_id, span, rank, fault in case.servers:  # a later row for the same id wins
        start, end = (int(x) for x in span.split(":"))
        servers[server_id] = FakeServer(server_id, BlockRange(start, end), rank, fault)
    config = ClientConfig(initial_peers=(), connect_timeout=0.05, open_timeout=0.05, step_timeout=0.05,
                          push_allowance=0.0, max_retries=4, routing=replace(RoutingConfig(), chained=case.chained),
                          verify_fraction=case.verify, verify_seed=0)
    listed = list(servers.values())
    return listed, FakeSwarm(listed, config), FakeTransport(listed)


def _inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randn(1, PROMPT, HIDDEN, generator=generator)
    return [prompt] + [torch.randn(1, 1, HIDDEN, generator=generator) for _ in range(DECODE)]


def _reference(inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
    """Outputs and per-block caches of a failure-free run through all blocks at once."""
    blocks = BlockRange(0, NUM_BLOCKS)
    caches = new_caches(blocks, 1, MAX_LENGTH, HIDDEN)
    outputs, position = [], 0
    for hidden in inputs:
        outputs.append(run_blocks(caches, blocks, hidden, position))
        position += hidden.shape[1]
    return outputs, caches


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_failover(case: Case) -> None:
    servers, swarm, transport = _make(case)
    session = RemoteInferenceSession(swarm, "fake-model", NUM_BLOCKS, BlockRange(0, NUM_BLOCKS), 1,
                                     MAX_LENGTH, torch.float32, transport)
    inputs = _inputs()
    expected, caches = _reference(inputs)
    outputs: list[torch.Tensor] = []
    try:
        if case.raises is AssertionError:  # the defence is off: the lie reaches the output
            await session.open()
            outputs = [await session.step(hidden) for hidden in inputs]
            assert not torch.allclose(outputs[-1], expected[-1], rtol=1e-3, atol=1e-3)
            assert swarm.banned == [] and session.verification.steps_checked == 0
            return
        if case.raises is not None:
            with pytest.raises(case.raises) as raised:
                await session.open()
                for hidden in inputs:
                    await session.step(hidden)
            _check_raised(raised.value, swarm, transport)
            return
        await session.open()
        for hidden in inputs:
            outputs.append(await session.step(hidden))
        if any(s.fault is not None and s.fault.kind == "late" for s in servers):
            await asyncio.sleep(LATE_S)  # let the replaced server's answer arrive (and be ignored)
            assert sum(s.late_results for s in servers) == 1
        final = [segment.stream for segment in session.segments]
    finally:
        await session.close()
    for got, want in zip(outputs, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got, want)
    assert swarm.banned == list(case.banned)
    assert len(session.recoveries) == case.recoveries
    assert session.verification.banned == list(case.outvoted)
    assert session.verification.unresolved == case.unresolved
    if case.verify:
        assert session.verification.steps_checked >= len(inputs)
    _check_streams(final, servers, caches)
    for server_id, count in case.sent:
        server = next(s for s in servers if s.server_id == server_id)
        assert sum(len(stream.client_steps) for stream in server.opened) == count, server_id


def _check_streams(final: Sequence[object], servers: list[FakeServer], caches: dict[int, torch.Tensor]) -> None:
    """No step was sent twice to one stream; the final route's caches are the reference ones."""
    for server in servers:
        for stream in server.opened:
            assert len(stream.client_steps) == len(set(stream.client_steps)), stream.client_steps
    length = PROMPT + DECODE
    for live in final:
        assert isinstance(live, FakeStream)
        for block, cache in live.caches.items():
            assert torch.allclose(cache[:, :length], caches[block][:, :length], rtol=1e-5, atol=1e-5), block


def _check_raised(error: BaseException, swarm: FakeSwarm, transport: FakeTransport) -> None:
    if isinstance(error, RemoteInvalidInput):
        # one session per primary, none on a backup: nothing was failed over or banned
        assert transport.opens == ["a", "b", "c"] and swarm.banned == []
        assert error.peer == "fake://b"
    if isinstance(error, NoRoute):
        assert (error.block, error.model) == (2, "fake-model") and swarm.banned == ["b"]


async def test_a_chain_longer_than_a_push_window_comes_back_to_the_client() -> None:
    """Servers accept MAX_STEP_HOPS onward hops: a step through more servers than that is
    returned to the client at each window's end and sent on from there."""
    config = ClientConfig(initial_peers=(), connect_timeout=0.05, open_timeout=0.05, step_timeout=0.05,
                          push_allowance=0.0, max_retries=4, routing=RoutingConfig(), verify_fraction=0.0)
    long_servers = [FakeServer(f"s{k}", BlockRange(k, k + 1)) for k in range(2 * PUSH_WINDOW_TEST)]  # 2 windows
    swarm, transport = FakeSwarm(long_servers, config), FakeTransport(long_servers)
    blocks = BlockRange(0, len(long_servers))
    session = RemoteInferenceSession(swarm, "fake-model", blocks.end, blocks, 1, MAX_LENGTH, torch.float32,
                                     transport)
    caches = new_caches(blocks, 1, MAX_LENGTH, HIDDEN)
    await session.open()
    try:
        position = 0
        for hidden in _inputs():
            want = run_blocks(caches, blocks, hidden, position)
            assert torch.allclose(await session.step(hidden), want, rtol=1e-5, atol=1e-5)
            position += hidden.shape[1]
        assert len(session.segments) == len(long_servers) and session.recoveries == []
    finally:
        await session.close()
    sent = {s.server_id: sum(len(stream.client_steps) for stream in s.opened) for s in long_servers}
    steps = 1 + DECODE
    assert sent == {s.server_id: steps if k % PUSH_WINDOW_TEST == 0 else 0 for k, s in enumerate(long_servers)}


def test_the_fake_blocks_compose_over_any_split() -> None:
    """The check the table relies on: splitting blocks over servers does not change outputs."""
    inputs = _inputs()
    whole, _ = _reference(inputs)
    parts = [BlockRange(0, 1), BlockRange(1, 4), BlockRange(4, 6)]
    caches = {k: v for p in parts for k, v in new_caches(p, 1, MAX_LENGTH, HIDDEN).items()}
    position = 0
    for hidden, want in zip(inputs, whole, strict=True):
        h = hidden
        for part in parts:
            h = run_blocks(caches, part, h, position)
        assert torch.equal(h, want)
        position += hidden.shape[1]
    # and a missed replay shows: a fresh cache for the last part gives another answer
    fresh = new_caches(parts[2], 1, MAX_LENGTH, HIDDEN)
    out = run_blocks(fresh, parts[2], torch.ones(1, 1, HIDDEN), PROMPT + DECODE)
    assert not torch.allclose(out, run_blocks(caches, parts[2], torch.ones(1, 1, HIDDEN), PROMPT + DECODE))


def test_peer_unavailable_family_fails_over_and_invalid_input_does_not() -> None:
    from client.ban_policy import fails_over
    from swarm.errors import PeerBusy, PeerRefused, PeerTimedOut

    for error in (PeerUnavailable("x"), PeerRefused("x"), PeerBusy("x"), PeerTimedOut("x")):
        assert fails_over(error)
    assert not fails_over(RemoteInvalidInput("x", code="INVALID_ARGUMENT"))


@pytest.mark.parametrize("verify", [0.0, 1.0])
async def test_middle_servers_hold_their_copies_unless_the_step_is_checked(verify: float) -> None:
    """defer_copy: a decode step's middle servers send their copies later, batched (the
    failover cases above replay histories built from such copies), and a step picked for a
    spot check is sent without it (its copies are needed at once)."""
    config = ClientConfig(initial_peers=(), connect_timeout=0.05, open_timeout=0.05, step_timeout=0.5,
                          push_allowance=0.0, max_retries=2, routing=RoutingConfig(), verify_fraction=verify)
    servers = [FakeServer("a", BlockRange(0, 2)), FakeServer("b", BlockRange(2, 4)), FakeServer("c", BlockRange(4, 6))]
    swarm, transport = FakeSwarm(servers, config), FakeTransport(servers)
    session = RemoteInferenceSession(swarm, "fake-model", NUM_BLOCKS, BlockRange(0, NUM_BLOCKS), 1, MAX_LENGTH,
                                     torch.float32, transport)
    inputs = _inputs()
    want, _ = _reference(inputs)
    await session.open()
    try:
        for hidden, expected in zip(inputs, want, strict=True):
            assert torch.allclose(await session.step(hidden), expected, rtol=1e-5, atol=1e-5)
        await asyncio.sleep(0.1)  # past HOLD_S: every held copy has been sent
    finally:
        await session.close()
    batches = {s.server_id: [n for stream in s.opened for n in stream.batches] for s in servers}
    if verify:
        assert batches == {"a": [], "b": [], "c": []}
    else:  # every step is small (a 3-token prompt, then single tokens): all copies in one batch
        assert batches["a"] == batches["b"] == [1 + DECODE] and batches["c"] == []
