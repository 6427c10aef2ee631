"""The thin client's model: local embeddings and LM head, remote transformer blocks.

    model = AutoDistributedModelForCausalLM.from_pretrained(path, initial_peers=["host:port"])
    ids = model.generate(tokenizer("Hi", return_tensors="pt").input_ids, max_new_tokens=20)

Only the embeddings, the final norm and the LM head are loaded (tied embeddings shared);
`model.layers` are the swarm's blocks. The model is a transformers `PreTrainedModel` to
the code that uses one: `forward` returns `CausalLMOutputWithPast`, `generate` is
transformers' own loop over a KV-cache session of the swarm (`client.remote_cache`; what
it rejects is in `client.generation`), pipelines take it. Inside
`with model.inference_session(...)` successive `generate` calls continue the same
server-side KV caches.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from dataclasses import replace
from typing import Any, cast

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.generation.configuration_utils import GenerationMode
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StoppingCriteriaList
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.modeling_outputs import CausalLMOutputWithPast

from client.config import ClientConfig
from client.generation import DecodingState, checked_config, default_attention_mask, positions_of, rows_of
from client.remote_cache import RemoteCache
from swarm.errors import InvalidInput
from swarm.model.families import family_class
from swarm.model.head import ClientHead, load_client_head
from swarm.model.options import QUANTIZATIONS
from client.remote_sequential import RemoteSequential
from client.speculative import Speculative, SpeculativeStats, blockers, draft_limit, speculative_generate
from client.runtime import LoopThread, shared_loop
from client.session_handle import InferenceSession
from client.tuning import TrainableTuning, TuningMode, tuned_logits
from client.swarm_client import SwarmClient
from swarm import settings
from swarm.addresses import PeerAddress
from swarm.model_names import model_name_of
from swarm.tuning import Tuning

logger = logging.getLogger(__name__)


class DistributedModelForCausalLM(PreTrainedModel, GenerationMixin):  # type: ignore[no-untyped-call]
    """A causal LM whose transformer blocks run on the swarm.

    A transformers model to the code that uses one: `model(input_ids, attention_mask,
    labels=...)` returns a `CausalLMOutputWithPast`, `generate` is transformers' own
    loop (see `client.generation` for what it rejects), `pipeline("text-generation",
    model=model, tokenizer=tokenizer)` works.
    """

    # attention and experts run on the servers: whatever the config names, the client has nothing to check
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _can_set_experts_implementation_cached_value = True  # the same for mixture-of-experts blocks (Mixtral)

    def __init__(self, head: ClientHead, model_name: str, client: SwarmClient, loop: LoopThread,
                 generation_config: GenerationConfig) -> None:
        super().__init__(copy.deepcopy(head.config))  # transformers writes into the config it gets
        self.head = head
        self.model_name = model_name
        self.client = client
        self.loop = loop
        self.generation_config = generation_config
        self.layers = RemoteSequential(client, loop, model_name, head.info.num_blocks)
        self._session: InferenceSession | None = None
        self.speculative: Speculative = 0
        """generate's default `speculative=` (see `client.speculative`)."""
        self.speculative_stats: SpeculativeStats | None = None
        """The last generate call's speculative decoding: steps, drafted and accepted tokens (None: plain)."""
        self.tuning: TrainableTuning | None = None
        """Trainable prompts or LoRA factors (`from_pretrained(tuning_mode=...)`): with them set,
        the head is frozen, so the model's trainable parameters are exactly these."""

    def enable_tuning(self, tuning: TrainableTuning) -> None:
        """Trains `tuning` from now on: the head is frozen; calls and sessions carry it."""
        self.head.requires_grad_(False)
        self.tuning = tuning

    def save_adapter(self, directory: str | os.PathLike[str]) -> Path:
        """The LoRA factors in PEFT's format (`peft.PeftModel.from_pretrained` loads them)."""
        if self.tuning is None:
            raise InvalidInput("this model has no trainable adapter: from_pretrained(..., tuning_mode='lora')")
        return self.tuning.save_adapter(Path(directory), base_model=self.model_name)

    @property
    def num_blocks(self) -> int:
        return self.head.info.num_blocks

    @property
    def dtype(self) -> torch.dtype:
        return self.head.dtype

    @property
    def device(self) -> torch.device:
        return self.head.device

    def inference_session(self, max_length: int, batch_size: int = 1) -> _ActiveSession:
        """A KV-cache session over all blocks; `generate` calls inside it continue it."""
        prefix = self._prefix()  # (the session holds it before the tokens)
        session = self.layers.inference_session(max_length + (prefix.shape[1] if prefix is not None else 0),
                                                batch_size, self.dtype, tuning=self._servers_tuning())
        return _ActiveSession(self, session)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: RemoteCache | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **unused: Any,  # transformers' loop passes what a local model may read (the tokenizer, ...)
    ) -> Any:
        """Logits [batch, tokens, vocab] (and the loss with `labels`), as transformers' models.

        Without `past_key_values`: full sequences through the blocks (batch forward,
        differentiable). With a `RemoteCache` (what `generate` passes): one step of its
        session with the new tokens. `logits_to_keep` > 0 keeps the last that many.
        """
        if input_ids is None or inputs_embeds is not None:
            raise InvalidInput("the model takes input_ids (the embeddings are the client's own)")
        if past_key_values is not None and not isinstance(past_key_values, RemoteCache):
            raise InvalidInput("past_key_values must be the RemoteCache generate makes: the cache lives on the servers")
        if past_key_values is None and self.tuning is not None:
            logits = tuned_logits(self.head, self.layers, self.tuning, input_ids, attention_mask)
            logits = logits[:, -logits_to_keep:] if logits_to_keep else logits
        else:
            if past_key_values is None:
                hidden = self.layers(self.head.embed(input_ids), attention_mask)
            else:
                hidden = past_key_values.step(self.head.embed, input_ids, position_ids, attention_mask)
            logits = self.head.logits(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None
        if labels is not None:
            loss = ForCausalLMLoss(logits, labels.to(logits.device), vocab_size=logits.shape[-1])
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cast(Any, past_key_values))
        return out if return_dict is not False else out.to_tuple()

    def generate(  # type: ignore[override]
        self,
        inputs: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        prefix_allowed_tokens_fn: Any = None,
        streamer: Any = None,
        session: InferenceSession | None = None,
        **kwargs: Any,
    ) -> Any:
        """transformers' `generate` over a KV-cache session of the swarm (one step per token).

        Takes what transformers' takes (`max_new_tokens`, `do_sample`, `num_beams`,
        `min_new_tokens`, `no_repeat_ngram_size`, `stop_strings` with `tokenizer=`,
        `return_dict_in_generate`, `output_scores`, ...); raises InvalidInput naming any
        option the swarm cannot serve. Returns prompt + new tokens (or transformers' output
        object). `speculative=` ("auto", 0, N): drafts verified N at a time, see
        `client.speculative`; `model.speculative_stats` reports the acceptance rate. Within
        `model.inference_session(...)` (or with `session=`) the call continues after what the
        session holds and returns only this call's prompt + new tokens.
        """
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise InvalidInput("generate needs input_ids [batch, tokens] (token ids)")
        speculative = kwargs.pop("speculative", self.speculative)
        config = checked_config(generation_config or self.generation_config, kwargs)
        custom = bool(logits_processor or stopping_criteria or prefix_allowed_tokens_fn)
        drafts = draft_limit(speculative, blockers(config, input_ids.shape[0], custom, kwargs), bool(config.do_sample))
        session = session or self._session
        if session is None:
            cache, held = self._new_cache(), 0
        else:
            held = session.decoding.sequences.shape[1] if session.decoding is not None else 0
            cache, input_ids, kwargs["attention_mask"] = _continue(session, input_ids, kwargs.get("attention_mask"),
                                                                   config, self._prefix())
        hf_generate: Any = super().generate  # type: ignore[misc]  # its self type is a Protocol of transformers'
        self.speculative_stats = None
        try:
            if drafts:
                out, self.speculative_stats = speculative_generate(self, input_ids, config, cache, drafts, streamer,
                                                                   kwargs)
            else:
                out = hf_generate(input_ids, generation_config, logits_processor, stopping_criteria,
                                  prefix_allowed_tokens_fn, streamer=streamer, past_key_values=cache, **kwargs)
        finally:
            cache.close()
        if session is None:
            return out
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        pending = sequences.shape[1] - cache.get_seq_length()
        session.decoding = DecodingState(sequences, torch.cat(
            [cache.held_mask(), torch.ones(sequences.shape[0], pending, dtype=torch.long)], dim=1))
        if isinstance(out, torch.Tensor):
            return out[:, held:]
        out.sequences = sequences[:, held:]
        return out

    def _new_cache(self) -> RemoteCache:
        """The cache of a generation outside any session: it opens one at its first step."""
        tuning, prefix = self._servers_tuning(), self._prefix()
        extra = prefix.shape[1] if prefix is not None else 0  # (the session holds the prefix too)
        return RemoteCache(open_session=lambda rows, length: self.layers.inference_session(
            length + extra, rows, self.dtype, tuning=tuning), prefix=prefix)

    def _servers_tuning(self) -> Tuning | None:
        """What a generation's session carries: the LoRA factors or deep prompts."""
        return self.tuning.tuning() if self.tuning is not None else None

    def _prefix(self) -> torch.Tensor | None:
        """The trainable prefix a generation's session holds first (prompt tuning), detached."""
        prompt = self.tuning.prompt if self.tuning is not None else None
        return prompt.detach() if prompt is not None else None

    def _prepare_cache_for_generation(self, generation_config: GenerationConfig, model_kwargs: dict[Any, Any],
                                      generation_mode: GenerationMode, batch_size: int, max_cache_length: int) -> bool:
        """transformers sizes its cache here: we size the session (opened at the first step).

        `max_cache_length` counts every token but the last, the most the session holds.
        """
        cache = model_kwargs["past_key_values"]
        cache.max_length = max_cache_length + 1  # one spare: a step never fails on an off-by-one of transformers'
        return True

    def close(self) -> None:
        self.loop.run(self.client.close())


def _continue(session: InferenceSession, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              config: GenerationConfig, prefix: torch.Tensor | None) -> tuple[RemoteCache, torch.Tensor, torch.Tensor]:
    """A cache over a session that continues it: the ids and mask of the whole history + new tokens.

    transformers restarts from a cache given all tokens and the full mask; it sends the
    ones past the cache's length: the pending last token and the new ones.
    """
    if rows_of(config, input_ids.shape[0]) != session.batch_size or (config.num_beams or 1) > 1:
        raise InvalidInput(f"a session of {session.batch_size} rows continues {session.batch_size} prompts "
                           "without beams (num_beams and num_return_sequences run in a session of their own)")
    mask = attention_mask.long() if attention_mask is not None else default_attention_mask(input_ids, config)
    state = session.decoding
    if state is None:
        return RemoteCache(session=session, prefix=prefix), input_ids, mask
    ids = torch.cat([state.sequences, input_ids], dim=1)
    mask = torch.cat([state.attention_mask, mask], dim=1)
    held = state.sequences.shape[1] - 1
    cache = RemoteCache(session=session, ids=state.sequences[:, :held].clone(), positions=positions_of(mask)[:, :held],
                        prefix=prefix)
    return cache, ids, mask


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
        initial_peers: Sequence[PeerAddress | str] | None = None,
        *,
        dtype: torch.dtype | str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        model_name: str | None = None,
        config: ClientConfig | None = None,
        adapter: str | None = None,
        quantization: str | None = None,
        tuning_mode: TuningMode | None = None,
        pre_seq_len: int = 16,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: Sequence[str] = ("q_proj", "v_proj"),
        speculative: Speculative = 0,
    ) -> DistributedModelForCausalLM:
        """Loads the client's parts of a checkpoint and connects to the swarm.

        `initial_peers` are DHT addresses (`PeerAddress` or "host:port"); None: those of
        `config`, else $SWARM_INITIAL_PEERS. `dtype` (transformers 5's name) or
        `torch_dtype` (its old one): "auto" (the checkpoint's, the default), a name or a
        torch dtype. `model_name` defaults to the checkpoint directory's base name (what
        servers announce). `adapter`: a LoRA adapter the swarm serves (`swarm-node start
        --adapter NAME=DIR`), applied by the servers. `quantization` ("none", "int8", "nf4"):
        route only through servers whose blocks are quantized so (None: any). `tuning_mode` ("ptune", "deep_ptune",
        "lora") makes `model.tuning` trainable tensors (see `client.tuning`) that every call
        carries: train them with any torch loop, save LoRA with `model.save_adapter(dir)`.
        `speculative`: generate's default for speculative decoding (0: off, the default;
        "auto": greedy calls it serves; N: drafts of up to N tokens; see `client.speculative`).
        """
        peers = _initial_peers(initial_peers, config)
        config = replace(config, initial_peers=peers) if config else ClientConfig(initial_peers=peers)
        if adapter is not None:
            config = replace(config, adapter=adapter)
        if quantization is not None:
            if quantization not in QUANTIZATIONS:
                raise InvalidInput(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
            config = replace(config, quantization=quantization)
        head = load_client_head(path_or_id, _dtype_argument(dtype, torch_dtype))
        loop = shared_loop()
        client = loop.run(SwarmClient.connect(config))
        try:
            generation_config = GenerationConfig.from_pretrained(path_or_id)
        except OSError:
            generation_config = GenerationConfig.from_model_config(head.config)
        name = model_name or model_name_of(path_or_id)
        logger.info("client for %s ready: %d remote blocks", name, head.info.num_blocks)
        model = DistributedModelForCausalLM(head, name, client, loop, generation_config)
        draft_limit(speculative, [])  # a wrong value fails here, not at the first generate
        model.speculative = speculative
        if tuning_mode is not None:
            family_config = copy.deepcopy(head.config)
            model.enable_tuning(TrainableTuning(head.info, family_class(family_config)(family_config), tuning_mode,
                                                pre_seq_len=pre_seq_len, lora_rank=lora_rank,
                                                lora_alpha=lora_alpha, lora_targets=lora_targets, dtype=head.dtype))
        return model


def _initial_peers(given: Sequence[PeerAddress | str] | None, config: ClientConfig | None) -> tuple[PeerAddress, ...]:
    if given is not None:
        return tuple(PeerAddress.of(p) for p in given)
    if config is not None and config.initial_peers:
        return config.initial_peers
    from_env = tuple(PeerAddress.parse(p) for p in settings.initial_peers())
    if not from_env:
        raise InvalidInput(f"no initial peers: pass initial_peers=[...] or set ${settings.INITIAL_PEERS_ENV}")
    return from_env


def _dtype_argument(dtype: torch.dtype | str | None, torch_dtype: torch.dtype | str | None) -> torch.dtype | str:
    """`dtype=` (transformers 5) or `torch_dtype=` (before it); both only when they agree."""
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise InvalidInput(f"dtype={dtype} and torch_dtype={torch_dtype} disagree: pass one (dtype)")
    chosen = dtype if dtype is not None else torch_dtype
    return "auto" if chosen is None else chosen
