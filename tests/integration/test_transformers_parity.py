"""transformers idioms on the swarm's model equal local transformers, or raise the documented error.

A tiny Llama on three `swarm-node` processes (the `llama_swarm` fixture) against the
same checkpoint run by transformers itself. Every generate idiom is one row of a table:
the swarm's output must equal the local model's token for token (scores within float
tolerance), or the call must raise `InvalidInput` naming the option.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    StoppingCriteria,
    StoppingCriteriaList,
    pipeline,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from client import AutoDistributedModelForCausalLM, DistributedModelForCausalLM, InferenceSession, InvalidInput
from tests.integration.conftest import RunningSwarm
from tests.integration.slicing_models import VOCAB


def _save_char_tokenizer(directory: Path) -> None:
    """A tokenizer for the tiny vocabulary: one token per printable ASCII character."""
    chars = [chr(c) for c in range(32, 127)]
    names = ["<pad>", "<s>", "</s>", *chars, *(f"<u{i}>" for i in range(3 + len(chars), VOCAB))]
    backend = Tokenizer(models.WordLevel({name: i for i, name in enumerate(names)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(directory)


@pytest.fixture(scope="module")
def client(llama_swarm: RunningSwarm) -> Iterator[DistributedModelForCausalLM]:
    _save_char_tokenizer(llama_swarm.model_dir)
    model = AutoDistributedModelForCausalLM.from_pretrained(llama_swarm.model_dir, llama_swarm.peers,
                                                            dtype=torch.float32)
    yield model
    model.close()


@pytest.fixture(scope="module")
def reference(llama_swarm: RunningSwarm) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(llama_swarm.model_dir, dtype=torch.float32).eval()


def _prompt(batch: int = 1, length: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


class _StopAfterToken(StoppingCriteria):
    """Stops a row once it generated `token` (a custom criterion, as users write them)."""

    def __init__(self, token: int, prompt_length: int) -> None:
        self.token, self.prompt_length = token, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = (input_ids[:, self.prompt_length:] == self.token).any(dim=1)
        return done  # type: ignore[return-value]


# one row per idiom: (name, generate kwargs, seed of torch's sampling RNG or None)
PARITY: list[tuple[str, dict[str, Any], int | None]] = [
    ("greedy", {"max_new_tokens": 16, "do_sample": False}, None),
    ("sampling", {"max_new_tokens": 12, "do_sample": True, "temperature": 0.8, "top_k": 30, "top_p": 0.9}, 7),
    ("beam search", {"max_new_tokens": 12, "num_beams": 4, "do_sample": False}, None),
    ("beams returned", {"max_new_tokens": 10, "num_beams": 3, "num_return_sequences": 3, "length_penalty": 0.5,
                        "early_stopping": True}, None),
    ("beam sampling", {"max_new_tokens": 10, "num_beams": 3, "do_sample": True, "temperature": 1.5}, 11),
    ("several samples", {"max_new_tokens": 8, "do_sample": True, "num_return_sequences": 3}, 5),
    ("min_new_tokens", {"max_new_tokens": 12, "min_new_tokens": 10, "eos_token_id": "first greedy token"}, None),
    ("no_repeat_ngram_size", {"max_new_tokens": 20, "no_repeat_ngram_size": 2}, None),
    ("penalties and bans", {"max_new_tokens": 12, "repetition_penalty": 1.4, "bad_words_ids": [[5], [7, 8]],
                            "suppress_tokens": [9, 10], "min_p": 0.05, "do_sample": True}, 3),
    ("max_length", {"max_length": 14}, None),
]


def _resolve(kwargs: dict[str, Any], ids: torch.Tensor, reference: PreTrainedModel) -> dict[str, Any]:
    """Fills placeholders that depend on the reference model's greedy output."""
    if kwargs.get("eos_token_id") == "first greedy token":
        greedy = reference.generate(ids, max_new_tokens=1, do_sample=False)
        kwargs = {**kwargs, "eos_token_id": int(greedy[0, -1])}  # would end at once without min_new_tokens
    return kwargs


@pytest.mark.parametrize(("name", "kwargs", "seed"), PARITY, ids=[row[0] for row in PARITY])
def test_generate_equals_local_transformers(client: DistributedModelForCausalLM, reference: PreTrainedModel,
                                            name: str, kwargs: dict[str, Any], seed: int | None) -> None:
    ids = _prompt(seed=len(name))
    kwargs = _resolve(kwargs, ids, reference)
    if seed is not None:
        torch.manual_seed(seed)
    expected = reference.generate(ids, **kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    got = client.generate(ids, **kwargs)
    assert torch.equal(got, expected), (got, expected)


def test_beam_search_differs_from_greedy_and_batches_with_padding(client: DistributedModelForCausalLM,
                                                                   reference: PreTrainedModel) -> None:
    # a left-padded batch: beams of different prompts are reordered within their prompt only
    ids = _prompt(batch=3, length=7, seed=21)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :5] = 0
    ids = ids * mask
    kwargs = {"max_new_tokens": 12, "num_beams": 4, "pad_token_id": 0}
    expected = reference.generate(ids, attention_mask=mask, **kwargs)
    greedy = reference.generate(ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0)
    assert not torch.equal(expected, greedy)  # the table's beam rows exercise reordering, not greedy
    assert torch.equal(client.generate(ids, attention_mask=mask, **kwargs), expected)


def test_one_session_step_per_token(client: DistributedModelForCausalLM, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    step = InferenceSession.step

    def counting(self: InferenceSession, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        sent.append(hidden.shape[1])
        return step(self, hidden, *args, **kwargs)

    monkeypatch.setattr(InferenceSession, "step", counting)
    ids = _prompt(seed=71)
    client.generate(ids, max_new_tokens=10, min_new_tokens=10)
    assert sent == [ids.shape[1]] + [1] * 9  # a prefill, then one token per step: no re-forward
    sent.clear()
    client.generate(ids, max_new_tokens=10, min_new_tokens=10, num_beams=3)
    assert len(sent) == 10 and sent[0] == ids.shape[1]
    # step i holds i - 1 generated tokens: a reorder replays at most those, never the prompt
    assert all(tokens <= i for i, tokens in enumerate(sent[1:], start=1)), sent
    assert max(sent[1:]) > 1, sent  # and this beam search did reorder rows


def test_dict_outputs_with_scores_and_logits(client: DistributedModelForCausalLM, reference: PreTrainedModel) -> None:
    ids = _prompt(seed=31)
    for extra in ({}, {"num_beams": 2}):
        kwargs = {"max_new_tokens": 6, "return_dict_in_generate": True, "output_scores": True,
                  "output_logits": True, **extra}
        expected = reference.generate(ids, **kwargs)
        got = client.generate(ids, **kwargs)
        assert type(got) is type(expected)
        assert torch.equal(got.sequences, expected.sequences)
        assert len(got.scores) == len(expected.scores) and len(got.logits) == len(expected.logits)
        for mine, theirs in zip(got.scores + got.logits, expected.scores + expected.logits, strict=True):
            assert torch.allclose(mine, theirs, atol=1e-4)
        if extra:
            assert torch.allclose(got.sequences_scores, expected.sequences_scores, atol=1e-4)


def test_custom_logits_processor_and_stopping_criteria(client: DistributedModelForCausalLM,
                                                       reference: PreTrainedModel) -> None:
    ids = _prompt(seed=41)
    greedy = reference.generate(ids, max_new_tokens=12, do_sample=False)
    stop_token = int(greedy[0, ids.shape[1] + 4])

    def run(model: Any) -> torch.Tensor:
        processors = LogitsProcessorList([MinNewTokensLengthLogitsProcessor(ids.shape[1], 3, eos_token_id=2)])
        criteria = StoppingCriteriaList([_StopAfterToken(stop_token, ids.shape[1])])
        out: torch.Tensor = model.generate(ids, max_new_tokens=12, logits_processor=processors,
                                           stopping_criteria=criteria)
        return out

    expected = run(reference)
    assert expected.shape[1] < greedy.shape[1]  # the custom criterion stopped it early
    assert torch.equal(run(client), expected)


def test_stop_strings_with_the_tokenizer(client: DistributedModelForCausalLM, reference: PreTrainedModel,
                                         llama_swarm: RunningSwarm) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_swarm.model_dir)
    ids = _prompt(seed=51)
    greedy = reference.generate(ids, max_new_tokens=12, do_sample=False)
    stop = tokenizer.decode(greedy[0, ids.shape[1] + 3 : ids.shape[1] + 4])
    kwargs = {"max_new_tokens": 12, "stop_strings": [stop], "tokenizer": tokenizer}
    expected = reference.generate(ids, **kwargs)
    assert expected.shape[1] <= ids.shape[1] + 4
    assert torch.equal(client.generate(ids, **kwargs), expected)


def test_forward_returns_causal_lm_output_with_loss(client: DistributedModelForCausalLM,
                                                    reference: PreTrainedModel) -> None:
    ids = _prompt(batch=2, length=9, seed=61)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, labels=labels)
    got = client(ids, mask, labels=labels)
    assert isinstance(got, CausalLMOutputWithPast)
    assert torch.allclose(got.logits[mask.bool()], expected.logits[mask.bool()], atol=1e-4)
    assert got.loss is not None and torch.allclose(got.loss, expected.loss, atol=1e-5)
    assert client(ids).loss is None
    loss, logits = client(ids, labels=ids, return_dict=False)
    assert logits.shape == (2, 9, VOCAB) and loss.ndim == 0


def test_text_generation_pipeline(client: DistributedModelForCausalLM, reference: PreTrainedModel,
                                  llama_swarm: RunningSwarm) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_swarm.model_dir)
    prompt = "A swarm of"
    kwargs = {"max_new_tokens": 8, "do_sample": False}
    expected = pipeline("text-generation", model=reference, tokenizer=tokenizer)(prompt, **kwargs)
    got = pipeline("text-generation", model=client, tokenizer=tokenizer)(prompt, **kwargs)
    assert got == expected
    assert got[0]["generated_text"].startswith(prompt) and len(got[0]["generated_text"]) > len(prompt)


def test_initial_peers_from_the_environment(llama_swarm: RunningSwarm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_INITIAL_PEERS", f"127.0.0.1:1, {llama_swarm.peers[0]}")
    model = AutoDistributedModelForCausalLM.from_pretrained(llama_swarm.model_dir, torch_dtype="float32")
    try:
        assert [str(p) for p in model.client.config.initial_peers] == ["127.0.0.1:1", llama_swarm.peers[0]]
        assert model.generate(_prompt(), max_new_tokens=2).shape == (1, 8)
    finally:
        model.close()


# one row per option the swarm cannot serve: (generate kwargs, the name the error must give)
REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"num_beam_groups": 2, "num_beams": 4, "diversity_penalty": 0.5}, "num_beam_groups"),
    ({"penalty_alpha": 0.6, "top_k": 4}, "penalty_alpha"),
    ({"dola_layers": "high"}, "dola_layers"),
    ({"output_attentions": True, "return_dict_in_generate": True}, "output_attentions"),
    ({"output_hidden_states": True, "return_dict_in_generate": True}, "output_hidden_states"),
    ({"use_cache": False}, "use_cache"),
    ({"cache_implementation": "static"}, "cache_implementation"),
    ({"guidance_scale": 1.5}, "guidance_scale"),
    ({"prompt_lookup_num_tokens": 3}, "prompt_lookup_num_tokens"),
    ({"assistant_model": "a model"}, "assistant_model"),
    ({"force_words_ids": [[5]], "num_beams": 2}, "force_words_ids"),
    ({"custom_generate": lambda *a, **k: None}, "custom_generate"),
    ({"inputs_embeds": torch.zeros(1, 2, 32)}, "inputs_embeds"),
    ({"no_such_option": 3}, "no_such_option"),
]


@pytest.mark.parametrize(("kwargs", "name"), REJECTED, ids=[row[1] for row in REJECTED])
def test_unsupported_options_raise_invalid_input(client: DistributedModelForCausalLM, kwargs: dict[str, Any],
                                                 name: str) -> None:
    with pytest.raises(InvalidInput, match=name):
        client.generate(_prompt(), max_new_tokens=4, **kwargs)


def test_beams_inside_a_session_are_refused(client: DistributedModelForCausalLM) -> None:
    with client.inference_session(max_length=32), pytest.raises(InvalidInput, match="num_beams"):
        client.generate(_prompt(), max_new_tokens=4, num_beams=2)


def test_both_dtype_spellings_must_agree(llama_swarm: RunningSwarm) -> None:
    with pytest.raises(InvalidInput, match="disagree"):
        AutoDistributedModelForCausalLM.from_pretrained(llama_swarm.model_dir, llama_swarm.peers,
                                                        dtype=torch.float32, torch_dtype=torch.bfloat16)
