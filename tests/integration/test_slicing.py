"""Block stacks + client head reproduce the local transformers model, family by family.

Every test drives the same path a swarm does: client embeddings -> servers' block stacks
(each with its own KV cache) -> client final norm and LM head, and compares logits with
the whole model run by transformers on the same checkpoint (float32, to ~1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache

from swarm.model.head import ClientHead, load_client_head
from swarm.model.families import BlockStack, SessionCache, load_block_stack
from swarm.records import BlockRange
from tests.integration.slicing_models import (
    FAMILY_NAMES,
    left_padded,
    load_reference,
    reference_step,
    save_checkpoint,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slicing")
    return {name: save_checkpoint(name, root / name) for name in FAMILY_NAMES}


@pytest.fixture(scope="module")
def references(checkpoints: dict[str, Path]) -> dict[str, PreTrainedModel]:
    return {name: load_reference(path) for name, path in checkpoints.items()}


@dataclass
class Chain:
    """A client head and a route of (stack, blocks, session cache) hops."""

    head: ClientHead
    hops: list[tuple[BlockStack, BlockRange, SessionCache | None]]

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.head.embed(ids)
        for stack, blocks, cache in self.hops:
            hidden = stack.forward(
                hidden, blocks=blocks, position_ids=positions, attention_mask=mask, cache=cache
            )
        return self.head.logits(hidden)

    def crop(self, length: int) -> None:
        for stack, _, cache in self.hops:
            assert cache is not None
            stack.crop_cache(cache, length)
            assert stack.cache_length(cache) == length


def session(stack: BlockStack, blocks: BlockRange) -> tuple[BlockStack, BlockRange, SessionCache]:
    return stack, blocks, stack.new_cache(blocks)


def two_servers(path: Path) -> Chain:
    a, b = load_block_stack(path, BlockRange(0, 2)), load_block_stack(path, BlockRange(2, 4))
    return Chain(load_client_head(path), [session(a, BlockRange(0, 2)), session(b, BlockRange(2, 4))])


def greedy_compare(
    chain: Chain, ref: PreTrainedModel, lengths: list[int], total: int, steps: int
) -> list[torch.Tensor]:
    """Prefill then `steps` greedy tokens through both; asserts equal logits; returns ours."""
    ids, mask, positions = left_padded(lengths, total)
    ref_cache = DynamicCache(config=ref.config)
    outputs = []
    for step in range(steps + 1):
        ours = chain(ids, mask, positions)
        theirs = reference_step(ref, ids, mask, positions, ref_cache)
        real = mask[:, -ids.shape[1] :].bool()  # padded query rows are meaningless
        assert_close(ours[real], theirs[real], **TOL, msg=lambda m: f"step {step}: {m}")
        assert torch.equal(ours[:, -1].argmax(-1), theirs[:, -1].argmax(-1))
        outputs.append(ours)
        ids = theirs[:, -1:].argmax(-1)
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
    return outputs


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_two_servers_match_reference_greedy(
    name: str, checkpoints: dict[str, Path], references: dict[str, PreTrainedModel]
) -> None:
    greedy_compare(two_servers(checkpoints[name]), references[name], lengths=[6], total=6, steps=5)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_left_padded_batch_matches_reference(
    name: str, checkpoints: dict[str, Path], references: dict[str, PreTrainedModel]
) -> None:
    greedy_compare(two_servers(checkpoints[name]), references[name], lengths=[6, 3], total=6, steps=3)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sub_range_sessions_on_one_server(
    name: str, checkpoints: dict[str, Path], references: dict[str, PreTrainedModel]
) -> None:
    # One server holds 0:4; the route uses it three times, for 0:1, 1:3 and 3:4.
    path = checkpoints[name]
    server = load_block_stack(path, BlockRange(0, 4))
    hops = [session(server, BlockRange(s, e)) for s, e in ((0, 1), (1, 3), (3, 4))]
    chain = Chain(load_client_head(path), list(hops))
    greedy_compare(chain, references[name], lengths=[5, 2], total=5, steps=2)


@pytest.mark.parametrize("name", ["llama", "qwen2", "bloom", "falcon_alibi", "mixtral"])
def test_crop_and_replay_gives_identical_outputs(name: str, checkpoints: dict[str, Path]) -> None:
    chain = two_servers(checkpoints[name])
    ids, mask, positions = left_padded([6, 4], 6)
    prefill = chain(ids, mask, positions)
    steps = torch.tensor([[5], [7]]), torch.tensor([[9], [11]])

    def run_steps() -> list[torch.Tensor]:
        out = []
        for i, token in enumerate(steps):
            step_mask = torch.cat([mask, torch.ones(2, i + 1, dtype=torch.long)], dim=1)
            out.append(chain(token, step_mask, positions[:, -1:] + 1 + i))
        return out

    first = run_steps()
    chain.crop(6)
    assert all(torch.equal(a, b) for a, b in zip(first, run_steps(), strict=True))
    # Rewind into the prompt: re-feed its tail as a chunk, then the same steps.
    chain.crop(3)
    assert_close(chain(ids[:, 3:], mask, positions[:, 3:]), prefill[:, 3:], **TOL)
    for a, b in zip(first, run_steps(), strict=True):
        assert_close(a, b, **TOL)


@pytest.mark.parametrize("name", ["llama", "qwen2", "falcon_new", "falcon_alibi"])
def test_stateless_forward_gives_reference_gradients(
    name: str, checkpoints: dict[str, Path], references: dict[str, PreTrainedModel]
) -> None:
    # Backward passes run a stateless forward in grad mode w.r.t. the input hidden states.
    path, ref = checkpoints[name], references[name]
    ids, mask, positions = left_padded([5, 3], 5)
    real = mask.bool()
    chain = Chain(load_client_head(path), [])
    chain.hops = [(hop[0], hop[1], None) for hop in two_servers(path).hops]
    embeds = chain.head.embed(ids).detach().requires_grad_(True)
    hidden = embeds
    for stack, blocks, _ in chain.hops:
        hidden = stack.forward(hidden, blocks=blocks, position_ids=positions, attention_mask=mask)
    ours = chain.head.logits(hidden)
    ours[real].logsumexp(-1).sum().backward()

    ref_embeds = embeds.detach().clone().requires_grad_(True)
    theirs = ref(inputs_embeds=ref_embeds, attention_mask=mask, position_ids=positions).logits
    theirs[real].logsumexp(-1).sum().backward()
    assert_close(ours[real], theirs[real], **TOL)
    assert embeds.grad is not None and ref_embeds.grad is not None
    assert embeds.grad[real].abs().sum() > 0
    assert_close(embeds.grad[real], ref_embeds.grad[real], **TOL)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_cache_bytes_per_token_matches_the_cache(name: str, checkpoints: dict[str, Path]) -> None:
    stack = load_block_stack(checkpoints[name], BlockRange(1, 4))
    blocks = BlockRange(1, 3)
    cache = stack.new_cache(blocks)
    _, mask, positions = left_padded([5, 2], 5)
    hidden = torch.randn(2, 5, stack.info.hidden_size)
    stack.forward(hidden, blocks=blocks, position_ids=positions, attention_mask=mask, cache=cache)
    assert cache.length == 5
    assert cache.nbytes() == 2 * 5 * stack.cache_bytes_per_token(blocks)
    one_block = stack.cache_bytes_per_token(BlockRange(1, 2))
    assert stack.cache_bytes_per_token(BlockRange(1, 4)) == 3 * one_block
