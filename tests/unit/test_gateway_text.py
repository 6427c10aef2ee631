"""The gateway's pure pieces: text deltas with stop strings, and sampling option checks."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.requests import Limits, parse_chat, parse_completion
from gateway.sampling import InvalidRequest, Sampling, make_sampling
from gateway.text_stream import TextStream


def decode(ids: Sequence[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def run(text: str, stop: Sequence[str]) -> tuple[list[str], str, bool]:
    stream = TextStream(decode, stop)
    deltas = []
    for byte in text.encode():
        deltas.append(stream.add(byte))
        if stream.stopped:
            break
    deltas.append(stream.finish())
    return [d for d in deltas if d], stream.text, stream.stopped


@pytest.mark.parametrize("text,stop,answer,stopped", [
    ("Hello world", (), "Hello world", False),
    ("Hello world", ("wor",), "Hello ", True),
    ("Hello world", ("o",), "Hell", True),
    ("Hello world", ("xyz", "lo w"), "Hel", True),
    ("Hello world", ("world!",), "Hello world", False),  # a prefix of a stop string at the end is released
    ("ça va", ("va",), "ça ", True),
    ("aaab", ("aab",), "a", True),
])
def test_stop_strings(text: str, stop: tuple[str, ...], answer: str, stopped: bool) -> None:
    deltas, whole, was_stopped = run(text, stop)
    assert whole == answer and "".join(deltas) == answer
    assert was_stopped is stopped


def test_multibyte_characters_are_released_whole() -> None:
    deltas, whole, _ = run("ça — très", ())
    assert whole == "ça — très"
    assert all("\ufffd" not in d for d in deltas)
    assert deltas[0] == "ç"


def test_text_is_held_back_only_as_long_as_a_stop_string_could_start() -> None:
    stream = TextStream(decode, ("STOP",))
    released = [stream.add(b) for b in b"abcdef"]
    assert "".join(released) == "abc"  # the last len("STOP") - 1 characters wait
    assert stream.finish() == "def"


LIMITS = Limits(default_max_tokens=16, max_tokens_limit=100)


def test_defaults_follow_openai() -> None:
    sampling = parse_chat({"messages": [{"role": "user", "content": "hi"}]}, LIMITS).sampling
    assert sampling == Sampling(max_tokens=16, temperature=1.0, top_p=1.0, stop=(), seed=None)
    assert make_sampling(max_tokens=None, default_max_tokens=16, max_tokens_limit=100, temperature=0).greedy


def test_text_parts_and_developer_role() -> None:
    parsed = parse_chat({"messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                                      {"role": "user", "content": "hi"}], "max_completion_tokens": 5}, LIMITS)
    assert parsed.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert parsed.sampling.max_tokens == 5


@pytest.mark.parametrize("body,param", [
    ({"prompt": "x", "temperature": float("nan")}, "temperature"),
    ({"prompt": "x", "top_p": True}, "top_p"),
    ({"prompt": "x", "stop": 5}, "stop"),
    ({"prompt": "x", "seed": 2**64}, "seed"),
    ({"prompt": "x", "model": ""}, "model"),
    ({"prompt": "x", "logit_bias": {"5": 1}}, "logit_bias"),
    ({"prompt": "x", "n": True}, "n"),
])
def test_bad_values(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse_completion(body, LIMITS)
    assert error.value.param == param


def test_neutral_values_of_unsupported_fields_are_accepted() -> None:
    parsed = parse_completion({"prompt": "x", "n": 1, "presence_penalty": 0, "logprobs": None, "echo": False,
                               "user": "me"}, LIMITS)
    assert parsed.prompt == "x"
