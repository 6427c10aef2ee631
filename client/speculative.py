"""Speculative decoding through the swarm: several tokens per round trip.

Each step sends the pending token plus k tokens drafted by prompt lookup
(`client.speculative_draft`) through the servers as ONE session step of k+1 positions;
the k+1 distributions that come back decide which drafts to keep
(`client.speculative_accept`): greedy output is exactly plain greedy decoding's, and
sampling keeps plain sampling's distribution. The KV caches are then rolled back past
the rejected drafts: the next step starts at the first rejected position
(`InferenceStep.start_position`), which drops them on every server and, for failover,
from the client's replay history (a replica is rebuilt from positions before the step's
start only).

When it runs (`speculative=` of generate / from_pretrained, `swarm generate
--speculative N`): "auto" speculates, up to `DEFAULT_DRAFT_TOKENS`, on greedy calls it
serves exactly: one sequence, no beams, `max_new_tokens` set, no custom logits
processors / stopping criteria / prefix functions, no `return_dict_in_generate` (seeded
sampling would draw other samples than transformers' loop: same distribution, other
draws, so sampling speculates only when asked). 0 (or False) turns it off; N > 0 forces
it (InvalidInput on a call it cannot serve). Defaults: "auto" in `swarm generate` (a user
over real links, where round trips dominate: 3.1x measured on a copying answer); 0 in the
Python API, whose users compare with transformers step for step and seed for seed, and
where servers on slow CPUs can lose (0.88x measured where drafts mostly fail).

Not here: the session (`client.remote_cache`), the model (`client.model`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StoppingCriteriaList

from client.generation import default_attention_mask, positions_of, rows_of
from client.remote_cache import RemoteCache
from client.speculative_accept import greedy_accept, rejection_sample
from client.speculative_draft import DraftLength, PromptLookupDrafter
from swarm.errors import InvalidInput

if TYPE_CHECKING:
    from client.model import DistributedModelForCausalLM

logger = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_DRAFT_TOKENS = 8
"""Most drafted tokens per step in "auto" mode: past ~8, copies rarely run on unbroken."""

Speculative = int | bool | str | None
"""A `speculative=` value: "auto"/None, 0/False (off), True (the default length) or N > 0."""


@dataclass
class SpeculativeStats:
    """What one speculative generate call did (`model.speculative_stats` after the call)."""

    steps: int = 0
    """Session steps (round trips through the servers)."""
    tokens: int = 0
    """New tokens emitted."""
    drafted: int = 0
    """Drafted tokens sent for verification."""
    accepted: int = 0
    """Drafted tokens the model agreed with."""

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0


def blockers(config: GenerationConfig, batch: int, custom: bool, kwargs: dict[str, Any]) -> list[str]:
    """Why this generate call cannot be decoded speculatively ([]: it can).

    `custom`: the call passed logits processors, stopping criteria or a prefix function.
    """
    reasons = []
    if rows_of(config, batch) != 1:
        reasons.append(f"{rows_of(config, batch)} sequences (it decodes one)")
    if (config.num_beams or 1) > 1:
        reasons.append("beam search")
    if config.return_dict_in_generate:
        reasons.append("return_dict_in_generate")
    if config.max_new_tokens is None:
        reasons.append("no max_new_tokens")
    if custom:
        reasons.append("custom logits_processor, stopping_criteria or prefix_allowed_tokens_fn")
    if kwargs.get("position_ids") is not None:
        reasons.append("position_ids")
    return reasons


def draft_limit(speculative: Speculative, reasons: list[str], sampling: bool = False) -> int:
    """Most tokens a step drafts for `speculative=`; 0: plain decoding."""
    if speculative is None or speculative == AUTO:
        return 0 if reasons or sampling else DEFAULT_DRAFT_TOKENS
    if speculative is False:
        return 0
    if speculative is True:
        speculative = DEFAULT_DRAFT_TOKENS
    if not isinstance(speculative, int) or speculative < 0:
        raise InvalidInput(f"speculative must be 'auto', a bool or a number of tokens >= 0, got {speculative!r}")
    if speculative and reasons:
        raise InvalidInput(f"speculative={speculative} cannot serve this call: {'; '.join(reasons)} "
                           "(speculative=0 or 'auto' decodes it plainly)")
    return speculative


class _Decoder:
    """The state of one speculative generate call."""

    def __init__(self, model: DistributedModelForCausalLM, cache: RemoteCache, config: GenerationConfig,
                 input_ids: torch.Tensor, kwargs: dict[str, Any]) -> None:
        self.model, self.cache = model, cache
        self.config = config = copy.deepcopy(config)
        length = input_ids.shape[1]
        mask = kwargs.get("attention_mask")
        self.mask = mask.long() if mask is not None else default_attention_mask(input_ids, config)
        # transformers' own preparation (eos/pad tensors, processors, criteria), as its loop does it;
        # typed against a Protocol of transformers' that our model satisfies only at run time
        mixin: Any = model
        mixin._prepare_special_tokens(config, mask is not None, device=input_ids.device, batch_size=1)
        if config.max_new_tokens is not None:
            config.max_length = config.max_new_tokens + length
        if config.min_new_tokens is not None:
            config.min_length = config.min_new_tokens + length
        cache.max_length = config.max_length  # what a plain call sizes: drafts never reach past it
        self.processors: Any = mixin._get_logits_processor(
            generation_config=config, input_ids_seq_length=length, encoder_input_ids=input_ids,
            logits_processor=LogitsProcessorList(), device=str(input_ids.device),
            model_kwargs={"attention_mask": self.mask})
        self.criteria: StoppingCriteriaList = mixin._get_stopping_criteria(
            generation_config=config, stopping_criteria=StoppingCriteriaList(), tokenizer=kwargs.get("tokenizer"))
        self.ids = input_ids
        self.stats = SpeculativeStats()

    def verify(self, draft: list[int]) -> torch.Tensor:
        """One session step with the uncached tokens + `draft`: processed scores [k+1, V]."""
        held = self.cache.get_seq_length()
        candidate = torch.cat([self.ids, torch.tensor([draft], dtype=self.ids.dtype)], dim=1)
        mask = torch.cat([self.mask, torch.ones(1, len(draft), dtype=self.mask.dtype)], dim=1)
        out = self.model(input_ids=candidate[:, held:], attention_mask=mask, position_ids=positions_of(mask)[:, held:],
                         past_key_values=self.cache, logits_to_keep=len(draft) + 1)
        logits = out.logits[0].to(dtype=torch.float32)
        length = self.ids.shape[1]
        return torch.cat([self.processors(candidate[:, :length + j], logits[j:j + 1].clone())
                          for j in range(len(draft) + 1)])

    def emit(self, tokens: list[int], scores: torch.Tensor, streamer: Any) -> bool:
        """Appends `tokens` one by one as plain decoding would; True once a criterion stops."""
        for j, token in enumerate(tokens):
            self.ids = torch.cat([self.ids, torch.tensor([[token]], dtype=self.ids.dtype)], dim=1)
            self.mask = torch.cat([self.mask, torch.ones(1, 1, dtype=self.mask.dtype)], dim=1)
            self.stats.tokens += 1
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if bool(self.criteria(self.ids, scores[j:j + 1]).any()):
                return True
        return False


def speculative_generate(model: DistributedModelForCausalLM, input_ids: torch.Tensor, config: GenerationConfig,
                         cache: RemoteCache, most: int, streamer: Any, kwargs: dict[str, Any]
                         ) -> tuple[torch.Tensor, SpeculativeStats]:
    """Decodes one sequence with drafts of up to `most` tokens; returns prompt + new tokens."""
    decoder = _Decoder(model, cache, config, input_ids, kwargs)
    drafter, length = PromptLookupDrafter(), DraftLength(most)
    stats = decoder.stats
    if streamer is not None:
        streamer.put(input_ids.cpu())
    finished = False
    while not finished and decoder.ids.shape[1] < decoder.config.max_length:
        room = decoder.config.max_length - decoder.ids.shape[1]  # a step emits up to drafts + 1
        draft = drafter.draft(decoder.ids[0].tolist(), min(length.current, room - 1))
        scores = decoder.verify(draft)
        draft_ids = torch.tensor(draft, dtype=torch.long)
        if decoder.config.do_sample:
            tokens = rejection_sample(draft_ids, torch.softmax(scores, dim=-1))
        else:
            tokens = greedy_accept(draft_ids, scores)
        stats.steps += 1
        stats.drafted += len(draft)
        stats.accepted += len(tokens) - 1
        length.update(len(draft), len(tokens) - 1)
        finished = decoder.emit(tokens, scores, streamer)
        # rejected drafts (and tokens past a stop) leave the cache: the next step starts there
        cache.crop(min(cache.get_seq_length(), decoder.ids.shape[1] - 1))
    if streamer is not None:
        streamer.end()
    logger.info("speculative decoding: %d tokens in %d steps (%.2f per step), %d of %d drafted tokens "
                "accepted (%.0f%%)", stats.tokens, stats.steps, stats.tokens_per_step, stats.accepted,
                stats.drafted, 100 * stats.acceptance_rate)
    return decoder.ids, stats
