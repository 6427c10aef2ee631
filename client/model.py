"""The thin client's model: local embeddings and LM head, remote transformer blocks.

    model = AutoDistributedModelForCausalLM.from_pretrained(path, initial_peers=["host:port"])
    ids = model.generate(tokenizer("Hi", return_tensors="pt").input_ids, max_new_tokens=20)

Only the embeddings, the final norm and the LM head are loaded (tied embeddings shared);
`model.layers` are the swarm's blocks. `generate` follows transformers' semantics for
what it supports (see `client.generation`); inside `with model.inference_session(...)`
successive `generate` calls continue the same server-side KV caches.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from transformers import GenerationConfig

from client.config import ClientConfig
from client.generation import default_attention_mask, generate_tokens, max_new_tokens
from swarm.model.head import ClientHead, load_client_head
from client.remote_sequential import RemoteSequential
from client.runtime import LoopThread, shared_loop
from client.session_handle import InferenceSession
from client.swarm_client import SwarmClient
from swarm.addresses import PeerAddress
from swarm.model_names import model_name_of

logger = logging.getLogger(__name__)


class DistributedModelForCausalLM(torch.nn.Module):
    """A causal LM whose transformer blocks run on the swarm."""

    def __init__(self, head: ClientHead, model_name: str, client: SwarmClient, loop: LoopThread,
                 generation_config: GenerationConfig) -> None:
        super().__init__()
        self.head = head
        self.model_name = model_name
        self.client = client
        self.loop = loop
        self.config = head.config
        self.generation_config = generation_config
        self.layers = RemoteSequential(client, loop, model_name, head.info.num_blocks)
        self._session: InferenceSession | None = None

    @property
    def num_blocks(self) -> int:
        return self.head.info.num_blocks

    @property
    def dtype(self) -> torch.dtype:
        return self.head.dtype

    def inference_session(self, max_length: int, batch_size: int = 1) -> _ActiveSession:
        """A KV-cache session over all blocks; `generate` calls inside it continue it."""
        session = self.layers.inference_session(max_length, batch_size, self.dtype)
        return _ActiveSession(self, session)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, tokens, vocab] of full sequences (batch forward, differentiable)."""
        hidden = self.layers(self.head.embed(input_ids), attention_mask)
        return self.head.logits(hidden)

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        streamer: Any = None,
        tokenizer: Any = None,
        session: InferenceSession | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Generates after `input_ids` [batch, tokens]; returns prompt + new tokens.

        Keyword arguments override the generation config as in transformers
        (max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty,
        eos_token_id, pad_token_id, stop_strings, ...). Within an inference session the
        call continues after what the session already holds.
        """
        config = self._generation_config(generation_config, kwargs)
        if attention_mask is None:
            attention_mask = default_attention_mask(input_ids, config)
        session = session or self._session
        with contextlib.ExitStack() as stack:
            if session is None:
                new_tokens = max_new_tokens(config, input_ids.shape[1])
                session = stack.enter_context(
                    self.layers.inference_session(input_ids.shape[1] + new_tokens,
                                                  input_ids.shape[0], self.dtype)
                )
            sequences, session.decoding = generate_tokens(
                self._step_fn(session), input_ids, attention_mask, config, session.decoding,
                streamer, tokenizer,
            )
        return sequences

    def _generation_config(self, base: GenerationConfig | None, overrides: dict[str, Any]) -> GenerationConfig:
        config = GenerationConfig.from_dict((base or self.generation_config).to_dict())
        unknown = config.update(**overrides)  # type: ignore[no-untyped-call]
        if unknown:
            raise TypeError(f"generate got unsupported arguments: {sorted(unknown)}")
        return config

    def _step_fn(self, session: InferenceSession) -> Any:
        def step(ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                hidden = self.head.embed(ids)
                out = session.step(hidden, positions, mask)
                return self.head.logits(out[:, -1])

        return step

    def close(self) -> None:
        self.loop.run(self.client.close())


class _ActiveSession(contextlib.AbstractContextManager["_ActiveSession"]):
    """`with model.inference_session(...) as session:` makes generate use `session`."""

    def __init__(self, model: DistributedModelForCausalLM, session: InferenceSession) -> None:
        self.model = model
        self.session = session

    def __enter__(self) -> Any:
        self.session.open()
        self.model._session = self.session
        return self.session

    def __exit__(self, *exc: object) -> None:
        self.model._session = None
        self.session.close()


class AutoDistributedModelForCausalLM:
    """Entry point in the style of transformers' Auto classes."""

    @staticmethod
    def from_pretrained(
        path_or_id: str | os.PathLike[str],
        initial_peers: Sequence[PeerAddress | str],
        *,
        torch_dtype: torch.dtype | str = "auto",
        model_name: str | None = None,
        config: ClientConfig | None = None,
    ) -> DistributedModelForCausalLM:
        """Loads the client's parts of a checkpoint and connects to the swarm.

        `initial_peers` are DHT addresses (`PeerAddress` or "host:port"); `model_name` defaults to the
        checkpoint directory's base name (what servers announce).
        """
        peers = tuple(PeerAddress.of(p) for p in initial_peers)
        config = replace(config, initial_peers=peers) if config else ClientConfig(initial_peers=peers)
        head = load_client_head(path_or_id, torch_dtype)
        loop = shared_loop()
        client = loop.run(SwarmClient.connect(config))
        try:
            generation_config = GenerationConfig.from_pretrained(path_or_id)
        except OSError:
            generation_config = GenerationConfig.from_model_config(head.config)
        name = model_name or model_name_of(path_or_id)
        logger.info("client for %s ready: %d remote blocks", name, head.info.num_blocks)
        return DistributedModelForCausalLM(head, name, client, loop, generation_config)
