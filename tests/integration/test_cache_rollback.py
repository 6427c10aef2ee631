"""Server-side KV-cache rollback, family by family, as speculative decoding uses it.

A verification step appends the pending token and k drafts; the next step starts at the
first rejected position (`start_position`), which must drop the rejected drafts from
every layer's cache, sliding windows and alibi included. The server's own step function
(`node.backend.run_step`) runs two block stacks; the logits after each rollback are
compared with the whole model run by transformers, without a cache, on the accepted text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from node.backend import run_step
from swarm.model.families import BlockStack, SessionCache, load_block_stack
from swarm.model.head import ClientHead, load_client_head
from swarm.records import BlockRange
from tests.integration.slicing_models import FAMILY_NAMES, VOCAB, load_reference, save_checkpoint

TOL = {"atol": 1e-5, "rtol": 1e-5}


class TwoServers:
    """Blocks 0:2 and 2:4 on two stacks, each with its session cache, and the client head."""

    def __init__(self, path: Path) -> None:
        self.head: ClientHead = load_client_head(path)
        self.hops: list[tuple[BlockStack, SessionCache]] = []
        for blocks in (BlockRange(0, 2), BlockRange(2, 4)):
            stack = load_block_stack(path, blocks)
            self.hops.append((stack, stack.new_cache(blocks)))

    def step(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Tokens `ids` [1, T] at positions start.. (dropping what the caches hold from there)."""
        hidden = self.head.embed(ids)
        tokens = ids.shape[1]
        positions = torch.arange(start, start + tokens)[None]
        mask = torch.ones(1, start + tokens, dtype=torch.long)
        for stack, cache in self.hops:
            hidden = run_step(stack, cache, stack.blocks, hidden, start, positions, mask)
            assert stack.cache_length(cache) == start + tokens
        return self.head.logits(hidden)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_rollback_of_rejected_drafts_matches_the_accepted_text(name: str, tmp_path: Path) -> None:
    path = save_checkpoint(name, tmp_path / name)
    reference = load_reference(path)
    servers = TwoServers(path)
    ids = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(7))
    prompt, drafts, after = ids[:, :6], ids[:, 6:11], ids[:, 11:]

    def expected(text: torch.Tensor, last: int) -> torch.Tensor:
        with torch.inference_mode():
            return reference(input_ids=text).logits[:, -last:]

    # prefill + 5 drafts (longer than the sliding windows of 4), then 2 kept: the next step
    # starts at 8 with the replacement token and 3 new drafts
    servers.step(torch.cat([prompt, drafts], dim=1), 0)
    kept = torch.cat([prompt, drafts[:, :2], after[:, :4]], dim=1)
    assert_close(servers.step(after[:, :4], 8), expected(kept, 4), **TOL)
    # every draft rejected: back to just after the replacement token
    kept = torch.cat([kept[:, :9], after[:, 4:6]], dim=1)
    assert_close(servers.step(after[:, 4:6], 9), expected(kept, 2), **TOL)
    # nothing rejected: the step appends (no rollback) and still matches
    kept = torch.cat([kept, after[:, 6:]], dim=1)
    assert_close(servers.step(after[:, 6:], 11), expected(kept, after.shape[1] - 6), **TOL)
