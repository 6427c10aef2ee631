"""Prompt-lookup drafting, the adaptive draft length and the speculative= policy (pure)."""

from __future__ import annotations

import pytest
from transformers import GenerationConfig

from client.speculative import DEFAULT_DRAFT_TOKENS, blockers, draft_limit
from client.speculative_draft import DraftLength, PromptLookupDrafter
from swarm.errors import InvalidInput


@pytest.mark.parametrize(("tokens", "count", "expected"), [
    ([1, 2, 3, 4, 9, 1, 2, 3], 3, [4, 9, 1]),  # trigram match, the tokens that followed it
    ([1, 2, 3, 4, 9, 1, 2, 3], 1, [4]),
    ([5, 2, 3, 6, 1, 2, 3], 2, [6, 1]),  # "2 3" recurs (not "1 2 3"): bigram
    ([7, 3, 8, 3, 9, 9, 3], 2, [9, 9]),  # only "3" recurs: the latest occurrence wins
    ([1, 2, 3, 4], 4, []),  # nothing recurs
    ([4, 4, 4], 5, [4]),  # an overlapping run drafts what followed
    ([1, 2, 3, 1, 2], 0, []),
    ([1], 3, []),
    ([], 3, []),
])
def test_prompt_lookup(tokens: list[int], count: int, expected: list[int]) -> None:
    assert PromptLookupDrafter().draft(tokens, count) == expected


def test_longest_ngram_wins_over_a_later_shorter_one() -> None:
    # "1 2 3" occurred at 0 (then 4); "3" alone occurred later (then 8)
    assert PromptLookupDrafter().draft([1, 2, 3, 4, 3, 8, 1, 2, 3], 1) == [4]
    assert PromptLookupDrafter(max_ngram=1).draft([1, 2, 3, 4, 3, 8, 1, 2, 3], 1) == [8]


def test_bad_ngram_bounds() -> None:
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookupDrafter(max_ngram=1, min_ngram=2)


def test_draft_length_adapts() -> None:
    length = DraftLength(5)
    assert length.current == 5
    length.update(5, 2)
    assert length.current == 4
    length.update(0, 0)  # nothing drafted: no change
    assert length.current == 4
    for _ in range(6):
        length.update(length.current, 0)
    assert length.current == 1
    length.update(1, 1)
    assert length.current == 3
    length.update(3, 3)
    length.update(5, 5)
    assert length.current == 5  # capped at most
    with pytest.raises(ValueError):
        DraftLength(0)


def test_policy() -> None:
    one = GenerationConfig(max_new_tokens=4)
    assert blockers(one, 1, False, {}) == []
    assert draft_limit("auto", []) == draft_limit(None, []) == draft_limit(True, []) == DEFAULT_DRAFT_TOKENS
    assert draft_limit(0, []) == draft_limit(False, []) == 0
    assert draft_limit(3, []) == 3
    reasons = blockers(GenerationConfig(max_new_tokens=4, num_beams=2), 2, True, {"position_ids": 1})
    assert len(reasons) == 4 and any("beam" in r for r in reasons)
    assert blockers(GenerationConfig(), 1, False, {}) == ["no max_new_tokens"]
    assert blockers(GenerationConfig(max_new_tokens=2, return_dict_in_generate=True), 1, False, {}) \
        == ["return_dict_in_generate"]
    assert draft_limit("auto", reasons) == 0  # auto falls back to plain decoding
    assert draft_limit("auto", [], sampling=True) == 0 and draft_limit(3, [], sampling=True) == 3
    with pytest.raises(InvalidInput, match="beam search"):
        draft_limit(4, reasons)  # asked for explicitly: refused, by name
    for bad in (-1, "fast", 2.5):
        with pytest.raises(InvalidInput, match="speculative must be"):
            draft_limit(bad, [])  # type: ignore[arg-type]


def test_generate_command_flag() -> None:
    import argparse

    from client.command_setup import draft_tokens as _draft_tokens
    from client.generate_command import _sampling

    assert _draft_tokens("0") == 0 and _draft_tokens("5") == 5
    for bad in ("-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _draft_tokens(bad)
    args = argparse.Namespace(max_new_tokens=4, temperature=0.0, repetition_penalty=None, speculative=None)
    assert _sampling(args)["speculative"] == "auto"
    assert _sampling(argparse.Namespace(**{**vars(args), "speculative": 0}))["speculative"] == 0
