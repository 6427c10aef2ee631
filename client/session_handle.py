"""The synchronous inference session users hold: `with model.inference_session(...) as s:`.

Wraps `RemoteInferenceSession` (asyncio, on the client's loop thread) for plain Python
code, and carries the decoding state that lets several `generate` calls continue one
session.
"""

from __future__ import annotations

from types import TracebackType

import torch

from client.generation import DecodingState
from client.inference_session import RemoteInferenceSession
from client.runtime import LoopThread


class InferenceSession:
    """A KV-cache session through the swarm over some blocks of a model."""

    def __init__(self, remote: RemoteInferenceSession, loop: LoopThread) -> None:
        self._remote = remote
        self._loop = loop
        self._opened = False
        self.decoding: DecodingState | None = None
        """Set by `generate` so that the next call continues where it stopped."""

    @property
    def position(self) -> int:
        """Tokens (per row) the session holds."""
        return self._remote.position

    @property
    def batch_size(self) -> int:
        return self._remote.batch_size

    @property
    def max_length(self) -> int:
        return self._remote.max_length

    @property
    def route(self) -> str:
        """The servers the session runs on, in order."""
        return self._remote.route_description

    @property
    def recoveries(self) -> list[float]:
        """Seconds each failover took so far."""
        return list(self._remote.recoveries)

    def open(self) -> InferenceSession:
        if not self._opened:
            self._loop.run(self._remote.open())
            self._opened = True
        return self

    def step(
        self,
        hidden_states: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        start_position: int | None = None,
    ) -> torch.Tensor:
        """Runs hidden states [batch, tokens, hidden] of new tokens through the blocks.

        Appends at the session's position (or at `start_position`, dropping what came
        after it); returns the hidden states after the blocks.
        """
        self.open()
        return self._loop.run(
            self._remote.step(hidden_states, position_ids, attention_mask, start_position)
        )

    def close(self) -> None:
        if self._opened:
            self._loop.run(self._remote.close())
            self._opened = False

    def __enter__(self) -> InferenceSession:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
