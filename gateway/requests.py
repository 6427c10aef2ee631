"""OpenAI request bodies -> validated requests (pure: no I/O).

Every field of a body is checked: a supported field's value (type, range), an OpenAI
field we do not implement is accepted only at its neutral value (e.g. `n: 1`,
`presence_penalty: 0`) and refused otherwise, and an unknown field is refused, as
OpenAI does. Nothing is silently ignored. Errors are `InvalidRequest` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.sampling import InvalidRequest, Sampling, make_sampling

ROLES = ("system", "user", "assistant")
MAX_PROMPT_CHARS = 1 << 20
"""A prompt (or a conversation) longer than this is refused before tokenizing (1 Mi chars)."""
MAX_MESSAGES = 1024

_COMMON = frozenset({"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options",
                     "user", "n", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs"})
# fields we accept only at the value that means "off" (what OpenAI does without them)
_NEUTRAL: dict[str, tuple[object, ...]] = {
    "n": (None, 1), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}), "logprobs": (None, False), "echo": (None, False), "suffix": (None, ""),
    "best_of": (None, 1), "top_logprobs": (None, 0), "tools": (None, []), "tool_choice": (None, "none"),
    "parallel_tool_calls": (None, False, True), "response_format": (None, {"type": "text"}),
}
COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "suffix", "best_of"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                         "parallel_tool_calls", "response_format"}


@dataclass(frozen=True)
class Limits:
    """The gateway's bounds on a request."""

    default_max_tokens: int
    max_tokens_limit: int


@dataclass(frozen=True)
class CompletionRequest:
    model: str | None
    prompt: str | list[int]
    sampling: Sampling
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    messages: list[dict[str, str]]
    sampling: Sampling
    stream: bool
    include_usage: bool


def parse_completion(body: object, limits: Limits) -> CompletionRequest:
    fields = _check_fields(body, COMPLETION_FIELDS)
    stream, usage = _stream_flags(fields)
    return CompletionRequest(_model(fields), _prompt(fields.get("prompt")), _sampling(fields, limits, "max_tokens"),
                             stream, usage)


def parse_chat(body: object, limits: Limits) -> ChatRequest:
    fields = _check_fields(body, CHAT_FIELDS)
    if fields.get("max_tokens") is not None and fields.get("max_completion_tokens") is not None:
        raise InvalidRequest("give either 'max_tokens' or 'max_completion_tokens', not both", "max_tokens")
    name = "max_completion_tokens" if fields.get("max_completion_tokens") is not None else "max_tokens"
    stream, usage = _stream_flags(fields)
    return ChatRequest(_model(fields), parse_messages(fields.get("messages")), _sampling(fields, limits, name),
                       stream, usage)


def _check_fields(body: object, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    for name, value in body.items():
        if name not in allowed:
            raise InvalidRequest(f"unrecognized request argument supplied: {name}", name)
        neutral = _NEUTRAL.get(name)
        if neutral is not None and not _is_one_of(value, neutral):
            raise InvalidRequest(f"'{name}' is not supported by this server (only {neutral[1]!r} is)", name)
    if not isinstance(body.get("user", ""), str):
        raise InvalidRequest("'user' must be a string", "user")
    return body


def _is_one_of(value: object, options: tuple[object, ...]) -> bool:
    # JSON true == 1 in Python: a bool matches only a bool
    return any(value == option and isinstance(value, bool) == isinstance(option, bool) for option in options)


def _model(fields: Mapping[str, Any]) -> str | None:
    model = fields.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequest(f"'model' must be a non-empty string, got {model!r}", "model")
    return model


def _stream_flags(fields: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = fields.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest(f"'stream' must be a boolean, got {stream!r}", "stream")
    options = fields.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise InvalidRequest("'stream_options' is only allowed with 'stream': true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"} or \
            not isinstance(options.get("include_usage", False), bool):
        raise InvalidRequest(f"'stream_options' must be {{\"include_usage\": bool}}, got {options!r}", "stream_options")
    return True, bool(options.get("include_usage", False))


def _sampling(fields: Mapping[str, Any], limits: Limits, max_tokens_name: str) -> Sampling:
    return make_sampling(
        max_tokens=fields.get(max_tokens_name), max_tokens_name=max_tokens_name,
        default_max_tokens=min(limits.default_max_tokens, limits.max_tokens_limit),
        max_tokens_limit=limits.max_tokens_limit, temperature=fields.get("temperature"),
        top_p=fields.get("top_p"), stop=fields.get("stop"), seed=fields.get("seed"))


def _prompt(prompt: object) -> str | list[int]:
    """A string, a list of one string, or a list of token ids (as OpenAI accepts)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidRequest("'prompt' must not be empty", "prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters", "prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                   for t in prompt):
        return list(prompt)
    raise InvalidRequest("'prompt' must be a non-empty string (one prompt per request) or a list of token ids",
                         "prompt")


def parse_messages(messages: object) -> list[dict[str, str]]:
    """OpenAI chat messages -> [{"role", "content"}]; content may be text parts."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f"'messages' may hold at most {MAX_MESSAGES} messages", "messages")
    parsed = [_message(m, i) for i, m in enumerate(messages)]
    if sum(len(m["content"]) for m in parsed) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"the conversation is longer than {MAX_PROMPT_CHARS} characters", "messages")
    return parsed


def _message(message: object, index: int) -> dict[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'", where)
    extra = set(message) - {"role", "content", "name"}
    if extra:
        raise InvalidRequest(f"'{where}' has unsupported fields: {sorted(extra)}", where)
    role = message.get("role")
    if role == "developer":  # OpenAI's newer name for the system role
        role = "system"
    if role not in ROLES:
        raise InvalidRequest(f"'{where}.role' must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
    return {"role": str(role), "content": _content(message.get("content"), f"{where}.content")}


def _content(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) and set(p) == {"type", "text"}
                                         for p in content):
        return "".join(p["text"] for p in content)
    raise InvalidRequest(f"'{where}' must be a string or a list of text parts ({{\"type\": \"text\", \"text\": ...}})",
                         where)
