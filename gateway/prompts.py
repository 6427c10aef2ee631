"""Requests -> prompt token ids, checked against the served model (shared by HTTP and gRPC).

Plain prompts are tokenized as `swarm generate` does, conversations through the model's
chat template with the assistant's turn opened (as `swarm generate --chat`), so that the
gateway's greedy answers equal the CLI's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.sampling import InvalidRequest, Sampling


class Prompts:
    """Tokenizes and checks prompts for one served model."""

    def __init__(self, tokenizer: Any, model_ids: Sequence[str], max_context: int) -> None:
        self.tokenizer = tokenizer
        self.model_ids = list(model_ids)
        """The served model's name first (what /v1/models lists), then accepted aliases."""
        self.max_context = max_context
        """Most tokens of prompt + answer; 0: not checked."""

    @property
    def model_name(self) -> str:
        return self.model_ids[0]

    def check_model(self, model: str | None) -> None:
        """None or "" means the served model; another name is refused (OpenAI: 404)."""
        if model and model not in self.model_ids:
            raise InvalidRequest(f"The model '{model}' does not exist; this gateway serves '{self.model_name}'",
                                 "model", "model_not_found")

    def completion_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            vocab = len(self.tokenizer)
            if max(prompt) >= vocab:
                raise InvalidRequest(f"'prompt' holds token ids outside the vocabulary (0..{vocab - 1})", "prompt")
            return prompt
        return list(self.tokenizer(prompt).input_ids)

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise InvalidRequest("this model has no chat template: use /v1/completions", "messages")
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])

    def check_length(self, prompt_tokens: int, sampling: Sampling, param: str) -> None:
        if prompt_tokens == 0:
            raise InvalidRequest("the prompt is empty after tokenizing", param)
        limit = self.max_context
        if limit and prompt_tokens + sampling.max_tokens > limit:
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens; the request asks for "
                f"{prompt_tokens + sampling.max_tokens} ({prompt_tokens} in the prompt, {sampling.max_tokens} "
                "to generate)", param, "context_length_exceeded")
