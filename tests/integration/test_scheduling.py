"""The node's compute queue with real blocks: passes in pieces, inference steps first.

Forward and Backward passes run one block per task under the default scheduling; their
results must equal one pass over the whole range (the fifo scheduling, one task per call,
is the node's former behaviour and the reference). An inference step that arrives while
a pass is queued runs before the pass's next piece.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from node.backend import FORWARD_CHUNK_TOKENS, BlockBackend, run_step
from node.scheduler import Priority, Scheduling
from swarm.model.families import load_block_stack
from swarm.prefill import prefill_spans
from swarm.records import BlockRange
from tests.integration.slicing_models import FAMILY_NAMES, save_checkpoint
from tests.wait import async_wait_until

BLOCKS = BlockRange(0, 6)


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    family = request.param
    return save_checkpoint(family, tmp_path_factory.mktemp(family) / f"tiny-{family}", layers=BLOCKS.end)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint("llama", tmp_path_factory.mktemp("llama") / "tiny-llama", layers=BLOCKS.end)


def _backends(checkpoint: Path) -> tuple[BlockBackend, BlockBackend]:
    stack = load_block_stack(checkpoint, BLOCKS, "float32")
    return BlockBackend(stack, Scheduling.PRIORITY), BlockBackend(stack, Scheduling.FIFO)


def test_long_rows_in_token_chunks_equal_one_pass(llama: Path) -> None:
    """Rows longer than FORWARD_CHUNK_TOKENS run as chunked prefill: same output, left padding included."""
    chunked, whole = _backends(llama)
    torch.manual_seed(1)
    tokens = FORWARD_CHUNK_TOKENS * 2 + 37
    hidden = torch.randn(2, tokens, chunked.hidden_size)
    mask = torch.ones(2, tokens, dtype=torch.int64)
    mask[0, :700] = 0

    async def run(backend: BlockBackend) -> torch.Tensor:
        return await backend.forward(BLOCKS, hidden, mask)

    try:
        out, ref = asyncio.run(run(chunked)), asyncio.run(run(whole))
    finally:
        chunked.close()
        whole.close()
    torch.testing.assert_close(out[0, 700:], ref[0, 700:], rtol=1e-4, atol=1e-5)  # padding rows' values are moot
    torch.testing.assert_close(out[1], ref[1], rtol=1e-4, atol=1e-5)


def test_a_long_step_runs_in_chunks_with_the_same_result(llama: Path) -> None:
    """A session step longer than a prefill chunk (a client that does not chunk its prompt)
    runs as consecutive chunks on the server: the same output and cache as one pass."""
    backend, _ = _backends(llama)
    stack = backend.stack
    torch.manual_seed(2)
    tokens = 700  # two chunks (512 + 188)
    hidden = torch.randn(1, tokens, backend.hidden_size)
    assert len(prefill_spans(0, tokens, 1, backend.hidden_size, hidden.dtype)) == 2
    chunked_cache, whole_cache = stack.new_cache(BLOCKS), stack.new_cache(BLOCKS)
    tasks: list[int] = []  # tokens of each task the compute thread ran
    submitted = backend.executor.run

    async def counted(priority: Priority, fn: Any, *args: Any, peer: str = "", inline: bool = False) -> Any:
        tasks.append(args[3].shape[1])
        return await submitted(priority, fn, *args, peer=peer, inline=inline)

    backend.executor.run = counted  # type: ignore[method-assign]

    async def run() -> tuple[torch.Tensor, torch.Tensor]:
        out = await backend.step(chunked_cache, BLOCKS, hidden, 0, None, None)
        return out, await backend.step(chunked_cache, BLOCKS, hidden[:, :1], tokens, None, None)

    try:
        out, after = asyncio.run(run())
    finally:
        backend.close()
    ref = run_step(stack, whole_cache, BLOCKS, hidden, 0, None, None)  # one task, as before
    ref_after = run_step(stack, whole_cache, BLOCKS, hidden[:, :1], tokens, None, None)
    assert tasks == [512, 188, 1]
    assert stack.cache_length(chunked_cache) == stack.cache_length(whole_cache) == tokens + 1
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after, ref_after, rtol=1e-4, atol=1e-5)


def test_passes_in_pieces_equal_one_pass(checkpoint: Path) -> None:
    pieces, whole = _backends(checkpoint)
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, pieces.hidden_size)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding in the first row
    grad_outputs = torch.randn_like(hidden)

    async def both(backend: BlockBackend) -> tuple[torch.Tensor, torch.Tensor]:
        return (await backend.forward(BLOCKS, hidden, mask),
                (await backend.backward(BLOCKS, hidden, grad_outputs, mask))[0])

    try:
        (out, grad), (ref_out, ref_grad) = asyncio.run(both(pieces)), asyncio.run(both(whole))
    finally:
        pieces.close()
        whole.close()
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert grad.abs().sum() > 0


async def _finishing_order(backend: BlockBackend) -> list[str]:
    """Queues a Forward pass and then an inference step behind a busy worker; returns which finished first."""
    gate, started = threading.Event(), threading.Event()
    busy = backend.executor.submit(Priority.BATCH, lambda: (started.set(), gate.wait(10)))
    assert started.wait(10)
    finished: list[str] = []
    hidden = torch.randn(4, 16, backend.hidden_size)
    passing = asyncio.create_task(backend.forward(BLOCKS, hidden, None))
    passing.add_done_callback(lambda _: finished.append("forward"))
    await async_wait_until(lambda: backend.executor.queued == 1, 10, "the pass's first piece is queued")
    cache = backend.new_cache(BLOCKS)
    stepping = asyncio.create_task(backend.step(cache, BLOCKS, torch.randn(1, 3, backend.hidden_size), 0, None, None))
    stepping.add_done_callback(lambda _: finished.append("step"))
    await async_wait_until(lambda: backend.executor.queued == 2, 10, "the step is queued behind the pass")
    gate.set()
    await asyncio.gather(passing, stepping)
    busy.result(10)
    return finished


def test_an_inference_step_goes_ahead_of_a_queued_pass(llama: Path) -> None:
    pieces, whole = _backends(llama)
    try:
        assert asyncio.run(_finishing_order(pieces)) == ["step", "forward"]
        # the single queue makes the step wait for the whole pass
        assert asyncio.run(_finishing_order(whole)) == ["forward", "step"]
    finally:
        pieces.close()
        whole.close()
