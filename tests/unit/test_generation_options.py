"""`checked_config`: what generate through the swarm refuses, by name, before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import GenerationConfig

from client.generation import UNSUPPORTED_ARGUMENTS, UNSUPPORTED_OPTIONS, checked_config, positions_of, rows_of
from swarm.errors import InvalidInput

BASE = GenerationConfig(bos_token_id=1, eos_token_id=2)

ACCEPTED: list[dict[str, Any]] = [
    {},
    {"max_new_tokens": 5, "do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.8, "early_stopping": True},
    {"min_new_tokens": 3, "no_repeat_ngram_size": 2, "repetition_penalty": 1.2, "bad_words_ids": [[3]]},
    {"return_dict_in_generate": True, "output_scores": True, "output_logits": True},
    {"use_cache": True, "guidance_scale": 1.0, "num_beam_groups": 1, "output_attentions": False},
    {"attention_mask": "passed through", "tokenizer": "passed through", "stop_strings": ["\n"]},
]


@pytest.mark.parametrize("kwargs", ACCEPTED)
def test_what_transformers_loop_serves_is_accepted(kwargs: dict[str, Any]) -> None:
    config = checked_config(BASE, dict(kwargs))
    for name in ("max_new_tokens", "num_beams", "min_new_tokens", "return_dict_in_generate"):
        if name in kwargs:
            assert getattr(config, name) == kwargs[name]
    assert BASE.num_beams is None  # the base is copied, never changed


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0}, "num_beam_groups"),
    ({"penalty_alpha": 0.5, "top_k": 4}, "penalty_alpha"),
    ({"output_hidden_states": True}, "output_hidden_states"),
    ({"output_attentions": True}, "output_attentions"),
    ({"use_cache": False}, "use_cache"),
    ({"guidance_scale": 2.0}, "guidance_scale"),
    ({"cache_implementation": "static"}, "cache_implementation"),
    ({"assistant_model": object()}, "assistant_model"),
    ({"synced_gpus": True}, "synced_gpus"),
    ({"past_key_values": object()}, "past_key_values"),
    ({"max_new_tokenz": 4}, "max_new_tokenz"),
]


@pytest.mark.parametrize(("kwargs", "name"), REFUSED, ids=[name for _, name in REFUSED])
def test_what_the_swarm_cannot_serve_is_refused_by_name(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidInput, match=name):
        checked_config(BASE, kwargs)


def test_every_refusal_says_why() -> None:
    assert all(why for why in {**UNSUPPORTED_OPTIONS, **UNSUPPORTED_ARGUMENTS}.values())
    assert all(hasattr(GenerationConfig(), name) for name in UNSUPPORTED_OPTIONS)


def test_rows_and_positions() -> None:
    assert rows_of(GenerationConfig(num_beams=3), 2) == 6
    assert rows_of(GenerationConfig(do_sample=True, num_return_sequences=4), 2) == 8
    assert rows_of(GenerationConfig(), 5) == 5
    assert positions_of(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
