"""Long prompts go to the servers in bounded chunks: the sizes, a session, a failover replay.

The session tests run over the in-memory swarm of `tests.unit.fake_swarm`, whose fake
blocks give the right answer only if each server's cache holds exactly what was sent,
in order: a chunk lost, doubled or sent at the wrong position changes the output.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from client.config import ClientConfig
from client.inference_session import RemoteInferenceSession
from swarm.prefill import (
    PREFILL_ATTENTION_AREA,
    PREFILL_CHUNK_TOKENS,
    STEP_PAYLOAD_BYTES,
    chunk_tokens,
    prefill_spans,
)
from swarm.protocol import InferenceStep
from swarm.records import BlockRange
from tests.unit.fake_swarm import (
    HIDDEN,
    FakeServer,
    FakeStream,
    FakeSwarm,
    FakeTransport,
    Fault,
    new_caches,
    run_blocks,
)

PROMPT = 2 * PREFILL_CHUNK_TOKENS + 76
"""Three chunks: two full, one partial."""
MAX_LENGTH = PROMPT + 8


@pytest.mark.parametrize(("batch", "hidden", "dtype", "expected"), [
    (1, 576, torch.float32, PREFILL_CHUNK_TOKENS),  # SmolLM2: 2.3 KB a token, the token cap binds
    (8, 8192, torch.float32, STEP_PAYLOAD_BYTES // (8 * 8192 * 4)),  # a wide model's batch: the bytes bind
    (8, 8192, torch.bfloat16, STEP_PAYLOAD_BYTES // (8 * 8192 * 2)),  # half the bytes, twice the tokens
    (64, 1 << 20, torch.float32, 1),  # a row over the byte cap still moves, one token at a time
])
def test_chunk_tokens(batch: int, hidden: int, dtype: torch.dtype, expected: int) -> None:
    assert chunk_tokens(batch, hidden, dtype) == expected


def test_prefill_spans_of_a_short_prompt_are_token_capped() -> None:
    assert prefill_spans(0, 1100, 1, 576, torch.float32) == [(0, 512), (512, 1024), (1024, 1100)]
    assert prefill_spans(0, 512, 1, 576, torch.float32) == [(0, 512)]
    assert prefill_spans(5, 1, 1, 576, torch.float32) == [(0, 1)]
    assert prefill_spans(0, 0, 1, 576, torch.float32) == []


@pytest.mark.parametrize(("start", "tokens", "batch"), [(0, 8160, 1), (7000, 1192, 1), (0, 8192, 4), (0, 300, 64)])
def test_prefill_spans_bound_the_attention_area(start: int, tokens: int, batch: int) -> None:
    spans = prefill_spans(start, tokens, batch, 576, torch.float32)
    assert [a for a, _ in spans] == [0, *(b for _, b in spans[:-1])] and spans[-1][1] == tokens  # in order, whole
    for a, b in spans:
        assert 1 <= b - a <= PREFILL_CHUNK_TOKENS
        assert (b - a) * (start + b) * batch <= PREFILL_ATTENTION_AREA or b - a == 1, (a, b)


def test_late_chunks_of_an_8k_prompt_are_small() -> None:
    spans = prefill_spans(0, 8160, 1, 576, torch.float32)
    assert spans[0] == (0, 512) and spans[-1][1] - spans[-1][0] <= 128
    assert len(spans) < 40  # not token by token


@pytest.fixture
def sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[tuple[int, int]]]]:
    """(start, tokens) of each step each fake server handled, by server id."""
    seen: dict[str, list[tuple[int, int]]] = {}
    deliver = FakeStream.deliver

    def recording(self: FakeStream, step: InferenceStep) -> None:
        seen.setdefault(self.server_id, []).append((step.start_position, step.hidden_states.shape[1]))
        deliver(self, step)

    monkeypatch.setattr(FakeStream, "deliver", recording)
    yield seen


def _session(servers: list[FakeServer]) -> tuple[RemoteInferenceSession, FakeSwarm]:
    config = ClientConfig(initial_peers=(), connect_timeout=0.05, open_timeout=0.5, step_timeout=0.5,
                          push_allowance=0.0, max_retries=4, verify_fraction=0.0)
    swarm = FakeSwarm(servers, config)
    return RemoteInferenceSession(swarm, "fake-model", 6, BlockRange(0, 6), 1, MAX_LENGTH, torch.float32,
                                  FakeTransport(servers)), swarm


def _inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, PROMPT, HIDDEN, generator=generator) / 10,
            *(torch.randn(1, 1, HIDDEN, generator=generator) / 10 for _ in range(3))]


async def _run(session: RemoteInferenceSession) -> None:
    """Steps the inputs through `session` and checks each output against the fake blocks."""
    caches = new_caches(BlockRange(0, 6), 1, MAX_LENGTH, HIDDEN)
    position = 0
    await session.open()
    try:
        for hidden in _inputs():
            want = run_blocks(caches, BlockRange(0, 6), hidden, position)
            got = await session.step(hidden)
            assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5)
            position += hidden.shape[1]
        assert session.position == position
    finally:
        await session.close()


async def test_a_long_prompt_is_sent_in_chunks(sizes: dict[str, list[tuple[int, int]]]) -> None:
    session, _ = _session([FakeServer("a", BlockRange(0, 2)), FakeServer("b", BlockRange(2, 4)),
                           FakeServer("c", BlockRange(4, 6))])
    await _run(session)
    prompt = [(0, 512), (512, 512), (1024, PROMPT - 1024)]
    for server in "abc":  # pushed on in the same chunks, then one token per decoding step
        assert sizes[server] == [*prompt, (PROMPT, 1), (PROMPT + 1, 1), (PROMPT + 2, 1)]


async def test_a_failover_replays_a_long_history_in_chunks(sizes: dict[str, list[tuple[int, int]]]) -> None:
    servers = [FakeServer("a", BlockRange(0, 2)), FakeServer("b", BlockRange(2, 4), fault=Fault("die", 4)),
               FakeServer("c", BlockRange(4, 6)), FakeServer("b2", BlockRange(2, 4), rank=1)]
    session, swarm = _session(servers)
    await _run(session)
    assert swarm.banned == ["b"] and len(session.recoveries) == 1
    # the replacement got the prompt and the first decoded token back in chunks, then the step it missed
    assert sizes["b2"][:3] == [(0, 512), (512, 512), (1024, PROMPT + 1 - 1024)]
    assert max(tokens for _, tokens in sizes["b2"]) <= PREFILL_CHUNK_TOKENS
