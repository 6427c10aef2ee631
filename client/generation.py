"""Token-by-token decoding with transformers' own logits processors.

Independent of the network: `generate_tokens` drives a `StepFn` that maps new token ids
(with their positions and the full attention mask) to next-token logits. It follows
transformers' `generate` for what it supports, so that greedy output is identical:
repetition penalty, then temperature, top-k, top-p (when sampling); eos / pad handling
per row; max_new_tokens; stop strings; streamers; left-padded batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.stopping_criteria import StopStringCriteria

logger = logging.getLogger(__name__)

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(new_ids [B, T], position_ids [B, T], attention_mask [B, past+T]) -> logits [B, V]."""


@dataclass
class DecodingState:
    """What a session remembers between generate calls.

    The last generated token of each row has not been through the blocks yet: the next
    call sends it first, at `next_position`, before its own new tokens.
    """

    attention_mask: torch.Tensor  # [B, tokens processed so far]
    pending: torch.Tensor  # [B, 1]: last generated tokens, not yet processed
    next_position: torch.Tensor  # [B]: position of the pending tokens


def processors_for(config: GenerationConfig) -> LogitsProcessorList:
    """The processors transformers would apply, in its order, for what we support."""
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=config.repetition_penalty))
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    return processors


def eos_ids(config: GenerationConfig) -> list[int]:
    eos = config.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def default_attention_mask(input_ids: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """As transformers infers it: padding tokens are masked when pad is not also eos."""
    pad = config.pad_token_id
    if pad is not None and pad not in eos_ids(config) and bool((input_ids == pad).any()):
        return input_ids.ne(pad).long()
    return torch.ones_like(input_ids, dtype=torch.long)


def generate_tokens(
    step: StepFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    state: DecodingState | None = None,
    streamer: Any = None,
    tokenizer: Any = None,
) -> tuple[torch.Tensor, DecodingState]:
    """Generates up to config.max_new_tokens after `input_ids`; returns ids incl. the prompt."""
    max_new = max_new_tokens(config, input_ids.shape[1])
    processors = processors_for(config)
    stop_strings = None
    if config.stop_strings:
        if tokenizer is None:
            raise ValueError("stop_strings need the tokenizer: pass tokenizer=... to generate")
        stop_strings = StopStringCriteria(tokenizer, config.stop_strings)
    eos = eos_ids(config)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)

    new_ids, mask, positions = _first_inputs(input_ids, attention_mask, state)
    sequences = input_ids.clone()
    all_ids = new_ids  # what the repetition penalty looks at, as in transformers
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool)
    if streamer is not None:
        streamer.put(input_ids.cpu())
    for _ in range(max_new):
        logits = step(new_ids, positions, mask).to(torch.float32)
        scores = processors(cast(torch.LongTensor, all_ids), logits)
        if config.do_sample:
            next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad))
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=1)
        all_ids = torch.cat([all_ids, next_tokens[:, None]], dim=1)
        if streamer is not None:
            streamer.put(next_tokens.cpu())
        if eos:
            unfinished &= ~torch.isin(next_tokens, torch.tensor(eos))
        if stop_strings is not None:
            unfinished &= ~stop_strings(sequences, scores)
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], dim=1)
        new_ids = next_tokens[:, None]
        if not bool(unfinished.any()):
            break
    if streamer is not None:
        streamer.end()
    return sequences, DecodingState(mask[:, :-1], new_ids, positions[:, -1])


def max_new_tokens(config: GenerationConfig, prompt_length: int) -> int:
    if config.max_new_tokens is not None:
        return int(config.max_new_tokens)
    if config.max_length is not None:
        return max(int(config.max_length) - prompt_length, 0)
    return 20


def _first_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, state: DecodingState | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids to send first, the full mask (past + new) and their positions.

    Positions count real tokens only and padding gets 0, as transformers sets them.
    """
    mask = attention_mask.long()
    if state is None:
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        return input_ids, mask, positions
    ids = torch.cat([state.pending, input_ids], dim=1)
    mask = torch.cat([torch.ones_like(state.pending), mask], dim=1)
    positions = (mask.cumsum(-1) - 1 + state.next_position[:, None]).masked_fill(mask == 0, 0)
    return ids, torch.cat([state.attention_mask, mask], dim=1), positions
