"""What a step message carries of its positions and mask: nothing when the defaults say it."""

from __future__ import annotations

import torch

from client.session_state import StepMeta


def _meta(start: int, tokens: int, positions: torch.Tensor, mask: torch.Tensor) -> StepMeta:
    return StepMeta(start, tokens, positions, mask)


def test_plain_decoding_steps_carry_no_positions_and_no_mask() -> None:
    for start, tokens, batch in ((0, 5, 1), (7, 1, 1), (40, 4, 3)):
        positions = torch.arange(start, start + tokens).expand(batch, tokens)
        mask = torch.ones(batch, start + tokens, dtype=torch.int64)
        assert _meta(start, tokens, positions, mask).wire_masks == (None, None)
    # a bool mask of ones is the same, and so are a float one and views (a slice of a longer mask)
    assert _meta(2, 1, torch.tensor([[2]]), torch.ones(1, 3, dtype=torch.bool)).wire_masks == (None, None)
    assert _meta(2, 1, torch.tensor([[2]]), torch.ones(1, 3)).wire_masks == (None, None)
    longer = torch.ones(2, 9, dtype=torch.int64)
    longer[:, 6:] = 0
    assert _meta(5, 1, torch.tensor([[5]]).expand(2, 1), longer[:, :6]).wire_masks == (None, None)
    assert _meta(5, 1, torch.tensor([[5]]).expand(2, 1), longer[:, 1:7]).wire_masks[1] is not None


def test_anything_else_goes_as_it_is() -> None:
    ones = torch.ones(2, 4, dtype=torch.int64)
    padded = ones.clone()
    padded[1, 0] = 0  # a left-padded row
    arange = torch.arange(2, 4).expand(2, 2)
    shifted = arange + 1  # e.g. a prefix before the positions
    cases = [
        _meta(2, 2, arange, padded),
        _meta(2, 2, shifted, ones),
        _meta(2, 2, arange[:1], ones),  # positions of one row for two: the server refuses, not us
        _meta(2, 2, arange, ones[:, :3]),  # a mask shorter than start + tokens
        _meta(2, 2, torch.tensor([[2, 3], [3, 2]]), ones),
    ]
    for meta in cases:
        positions, mask = meta.wire_masks
        assert positions is meta.position_ids and mask is meta.attention_mask
