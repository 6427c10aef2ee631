"""The gateway's wire boundary: `swarm.v1.TextGeneration` messages <-> our own values.

The only gateway module that imports `text_generation_pb2` (as `swarm.codec` is for the
block service). Requests are validated here with the same rules as the HTTP API
(`gateway.sampling`, `gateway.requests.parse_messages`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.requests import MAX_PROMPT_CHARS, Limits, parse_messages
from gateway.sampling import InvalidRequest, Sampling, make_sampling
from swarm.v1 import text_generation_pb2 as pb

FINISH_REASONS = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}


@dataclass(frozen=True)
class TextRequest:
    """A decoded Generate (prompt) or Chat (messages) call."""

    model: str
    prompt: str | None
    messages: list[dict[str, str]] | None
    sampling: Sampling


def sampling_from(options: pb.SamplingOptions, limits: Limits) -> Sampling:
    """Unset optional fields take their defaults (HasField tells unset from 0)."""
    def get(name: str) -> object:
        return getattr(options, name) if options.HasField(name) else None

    return make_sampling(max_tokens=get("max_tokens"), default_max_tokens=limits.default_max_tokens,
                         max_tokens_limit=limits.max_tokens_limit, temperature=get("temperature"),
                         top_p=get("top_p"), stop=list(options.stop) or None, seed=get("seed"))


def generate_request(request: pb.GenerateRequest, limits: Limits) -> TextRequest:
    if not request.prompt:
        raise InvalidRequest("'prompt' must not be empty", "prompt")
    if len(request.prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters", "prompt")
    return TextRequest(request.model, request.prompt, None, sampling_from(request.sampling, limits))


def chat_request(request: pb.ChatRequest, limits: Limits) -> TextRequest:
    messages = parse_messages([{"role": m.role, "content": m.content} for m in request.messages])
    return TextRequest(request.model, None, messages, sampling_from(request.sampling, limits))


def token_response(token_ids: Sequence[int], text: str) -> pb.GenerateResponse:
    return pb.GenerateResponse(token_ids=list(token_ids), text=text)


def final_response(reason: str, text: str, prompt_tokens: int, completion_tokens: int) -> pb.GenerateResponse:
    return pb.GenerateResponse(text=text, finish_reason=FINISH_REASONS[reason],
                               usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
