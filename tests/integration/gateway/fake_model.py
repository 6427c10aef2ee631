"""A stand-in for a swarm model and its tokenizer, to test the gateway in-process.

The tokenizer is bytes: token id = one UTF-8 byte (0..255), 256 = end of sequence, so
multi-byte characters span tokens. The "model" answers ANSWER whatever the prompt,
one byte per step, then EOS; a prompt containing "FAIL" makes the swarm fail (NoRoute)
on the first step, and every step sleeps STEP_S so that requests overlap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from swarm.errors import NoRoute

ANSWER = "Bonjour, ça va ? Très bien."
EOS = 256
VOCAB = 257
STEP_S = 0.02


class ByteTokenizer:
    chat_template = "bytes"
    eos_token_id = EOS

    def __len__(self) -> int:
        return VOCAB

    def __call__(self, text: str) -> Any:
        return SimpleNamespace(input_ids=list(text.encode()))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool,
                            return_dict: bool) -> dict[str, list[int]]:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        return {"input_ids": list(text.encode())}


class _Head:
    config = SimpleNamespace(max_position_embeddings=4096)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return ids[..., None].float()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden[:, 0] is the answer position the fake session computed."""
        answer = ANSWER.encode()
        position = int(hidden[0, 0])
        token = answer[position] if position < len(answer) else EOS
        out = torch.full((hidden.shape[0], VOCAB), -10.0)
        out[:, token] = 10.0
        out[:, (token + 1) % VOCAB] = 9.0  # a runner-up, so that sampling has a choice
        return out


@dataclass
class _Session:
    steps: int = 0
    prompt: list[int] = field(default_factory=list)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def step(self, hidden: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        time.sleep(STEP_S)
        if self.steps == 0 and b"FAIL" in bytes(int(x) for x in hidden[0, :, 0] if x < 256):
            raise NoRoute("no live server holds block 3 of fake-model")
        out = torch.full((hidden.shape[0], hidden.shape[1], 1), float(self.steps))
        self.steps += 1
        return out


class _Layers:
    def __init__(self) -> None:
        self.sessions: list[_Session] = []

    def inference_session(self, max_length: int, batch_size: int, dtype: torch.dtype) -> _Session:
        self.sessions.append(_Session())
        return self.sessions[-1]


class FakeModel:
    model_name = "fake-model"
    dtype = torch.float32

    def __init__(self) -> None:
        self.head = _Head()
        self.layers = _Layers()
        self.generation_config = SimpleNamespace(eos_token_id=EOS)
        self.client = None  # /api/v1/swarm is not served by the fake
        self.loop = None
