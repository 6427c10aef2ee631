"""What `generate` through the swarm accepts, and what a session remembers between calls.

Decoding itself is transformers' own loop (`GenerationMixin.generate`): greedy, sampling,
beam search and beam sampling, every logits processor and stopping criterion it builds
(min_new_tokens, no_repeat_ngram_size, bad_words_ids, stop_strings, max_time, ...),
custom `logits_processor` / `stopping_criteria`, streamers and `return_dict_in_generate`
outputs. This module rejects, before anything is sent, the options that loop would run
but the swarm cannot serve, each by name (`InvalidInput`), so that none is ignored.

Pure: no network, no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig

from swarm.errors import InvalidInput

# generation options (GenerationConfig fields) the swarm cannot serve, and why
UNSUPPORTED_OPTIONS: dict[str, str] = {
    "output_attentions": "attention weights stay on the servers",
    "output_hidden_states": "per-layer hidden states stay on the servers (use model.layers[a:b])",
    "penalty_alpha": "contrastive search needs every layer's hidden states",
    "dola_layers": "DoLa needs every layer's hidden states",
    "num_beam_groups": "group beam search is not in transformers' own loop (a Hub recipe)",
    "diversity_penalty": "group beam search is not in transformers' own loop (a Hub recipe)",
    "constraints": "constrained beam search is not in transformers' own loop (a Hub recipe)",
    "force_words_ids": "constrained beam search is not in transformers' own loop (a Hub recipe)",
    "prompt_lookup_num_tokens": "assisted decoding needs a cache it can crop",
    "assistant_early_exit": "assisted decoding needs a cache it can crop",
    "guidance_scale": "classifier-free guidance runs a second model with a local cache",
    "cache_implementation": "the KV cache lives on the servers",
    "token_healing": "token healing regenerates the prompt outside the session",
    "use_cache": "generation through the swarm always uses the servers' KV cache (use_cache=False)",
}

# arguments of transformers' generate (not GenerationConfig fields) the swarm cannot serve
UNSUPPORTED_ARGUMENTS: dict[str, str] = {
    "assistant_model": "assisted decoding needs a cache it can crop",
    "assistant_tokenizer": "assisted decoding needs a cache it can crop",
    "negative_prompt_ids": "classifier-free guidance runs a second model with a local cache",
    "negative_prompt_attention_mask": "classifier-free guidance runs a second model with a local cache",
    "custom_generate": "custom decoding loops are not checked against the swarm",
    "synced_gpus": "there is no multi-GPU group on the client",
    "inputs_embeds": "prompts are token ids (the embeddings are the client's own)",
    "past_key_values": "the KV cache lives on the servers (use model.inference_session)",
}

# model arguments generate passes through to forward
MODEL_ARGUMENTS = frozenset({"attention_mask", "position_ids", "tokenizer"})

# values that mean "off" for the options above (transformers' defaults)
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "num_beam_groups": (None, 1),
    "guidance_scale": (None, 1, 1.0),
    "diversity_penalty": (None, 0, 0.0),
    "penalty_alpha": (None, 0, 0.0),
    "use_cache": (None, True),
}


@dataclass
class DecodingState:
    """What a session remembers between generate calls.

    The last token of each row has not been through the blocks yet: the next call sends
    it first, before its own new tokens.
    """

    sequences: torch.Tensor  # [B, tokens]: every token of the session's rows, the pending last one included
    attention_mask: torch.Tensor  # [B, tokens]: their attention mask


def checked_config(base: GenerationConfig, kwargs: dict[str, Any]) -> GenerationConfig:
    """`base` updated with `kwargs` as transformers would; raises InvalidInput on what we cannot serve."""
    for name, why in UNSUPPORTED_ARGUMENTS.items():
        value = kwargs.get(name)
        if value is not None and value is not False:
            raise InvalidInput(f"generate does not support {name}= through the swarm: {why}")
    config = GenerationConfig.from_dict(base.to_dict())
    unknown = config.update(**kwargs)  # type: ignore[no-untyped-call]
    unknown_names = sorted(set(unknown) - MODEL_ARGUMENTS - set(UNSUPPORTED_ARGUMENTS))
    if unknown_names:
        raise InvalidInput(f"generate got unsupported arguments: {unknown_names}")
    for name, why in UNSUPPORTED_OPTIONS.items():
        value = getattr(config, name, None)
        if value not in _OFF_VALUES.get(name, (None, False)):
            raise InvalidInput(f"generate does not support {name}={value!r} through the swarm: {why}")
    return config


def rows_of(config: GenerationConfig, batch: int) -> int:
    """Session rows a generate call needs: every prompt times its beams or returned sequences."""
    return batch * max(config.num_beams or 1, config.num_return_sequences or 1)


def eos_ids(config: GenerationConfig) -> list[int]:
    eos = config.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def default_attention_mask(input_ids: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """As transformers infers it: padding tokens are masked when pad is not also eos."""
    pad = config.pad_token_id
    if pad is not None and pad not in eos_ids(config) and bool((input_ids == pad).any()):
        return input_ids.ne(pad).long()
    return torch.ones_like(input_ids, dtype=torch.long)


def positions_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids as transformers derives them: real tokens count, padding gets 0."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
