"""Trainable prompts and LoRA factors owned by the client: `nn.Parameter`s of the model.

Modes (`from_pretrained(..., tuning_mode=...)`):

- "ptune": `pre_seq_len` trainable embeddings prepended to every sequence (shallow prompt
  tuning; only the client computes with them, servers see ordinary hidden states);
- "deep_ptune": the same, plus a trainable prompt per block that servers add to the
  hidden states of those first positions as they enter the block;
- "lora": LoRA factors on `lora_targets` (leaf names such as "q_proj", or paths such as
  "self_attn.q_proj") of every block: A [r, in] (PEFT's Kaiming-uniform init) and B [out, r]
  (zeros), scale lora_alpha / r, applied by the servers.

`TrainableTuning.tuning()` is what a call sends: views of the parameters, so gradients
from Backward calls land in them. `save_adapter` writes the LoRA factors in PEFT's layout
(adapter_config.json + adapter_model.safetensors), loadable with `peft` on a local model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import nn

from client.remote_sequential import RemoteSequential
from swarm.errors import InvalidInput
from swarm.model.families import Family, ModelInfo
from swarm.model.families.tuning import lora_targets
from swarm.model.head import ClientHead
from swarm.tuning import MAX_LORA_RANK, MAX_PROMPT_TOKENS, Tuning

TuningMode = Literal["ptune", "deep_ptune", "lora"]
TUNING_MODES: tuple[str, ...] = ("ptune", "deep_ptune", "lora")


def block_targets(family: Family) -> dict[str, tuple[int, int]]:
    """The Linear projections of one block (built on the meta device: no memory)."""
    with torch.device("meta"):
        layer = family.new_layer(0)
    return lora_targets(layer)


def resolve_targets(wanted: Sequence[str], available: dict[str, tuple[int, int]]) -> list[str]:
    """Paths in the block for each wanted name (a path, or the leaf name of exactly one path)."""
    paths = []
    for name in wanted:
        matches = [p for p in available if p == name or p.rsplit(".", 1)[-1] == name]
        if len(matches) != 1:
            raise InvalidInput(f"LoRA target {name!r} matches {len(matches)} projections of a block; "
                               f"choose among {sorted(available)}")
        paths.append(matches[0])
    return sorted(set(paths))


class TrainableTuning(nn.Module):
    """The client's trainable tensors for one model (see the module docstring)."""

    def __init__(self, info: ModelInfo, family: Family, mode: TuningMode, *, pre_seq_len: int = 16,
                 lora_rank: int = 8, lora_alpha: float = 16.0, lora_targets: Sequence[str] = ("q_proj", "v_proj"),
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if mode not in TUNING_MODES:
            raise InvalidInput(f"tuning_mode must be one of {TUNING_MODES}, got {mode!r}")
        self.mode, self.family, self.info = mode, family, info
        self.pre_seq_len = pre_seq_len if mode != "lora" else 0
        self.lora_scale = lora_alpha / lora_rank if mode == "lora" else 1.0
        self.prompt: nn.Parameter | None = None
        self.deep_prompts = nn.ParameterDict()
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        self._lora_keys: dict[str, tuple[int, str]] = {}
        if mode in ("ptune", "deep_ptune"):
            if not 0 < pre_seq_len <= MAX_PROMPT_TOKENS:
                raise InvalidInput(f"pre_seq_len must be 1..{MAX_PROMPT_TOKENS}, got {pre_seq_len}")
            self.prompt = nn.Parameter(0.02 * torch.randn(1, pre_seq_len, info.hidden_size, dtype=dtype))
        if mode == "deep_ptune":
            for block in range(info.num_blocks):
                self.deep_prompts[str(block)] = nn.Parameter(torch.zeros(1, pre_seq_len, info.hidden_size, dtype=dtype))
        if mode == "lora":
            self._init_lora(lora_rank, lora_targets, dtype)

    def _init_lora(self, rank: int, wanted: Sequence[str], dtype: torch.dtype) -> None:
        if not 0 < rank <= MAX_LORA_RANK:
            raise InvalidInput(f"lora_rank must be 1..{MAX_LORA_RANK}, got {rank}")
        available = block_targets(self.family)
        self.targets = resolve_targets(wanted, available)
        for block in range(self.info.num_blocks):
            for target in self.targets:
                out, inp = available[target]
                key = f"{block}:{target}".replace(".", "_")  # (ParameterDict keys may not hold dots)
                a = torch.empty(rank, inp, dtype=dtype)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's default LoRA init: B = 0, so no change at first
                self.lora_a[key] = nn.Parameter(a)
                self.lora_b[key] = nn.Parameter(torch.zeros(out, rank, dtype=dtype))
                self._lora_keys[key] = (block, target)

    def tuning(self) -> Tuning | None:
        """What the servers apply (None for shallow prompt tuning: they see no tuning)."""
        prompts = {int(b): p for b, p in self.deep_prompts.items()}
        lora = {self._lora_keys[k]: (self.lora_a[k], self.lora_b[k]) for k in self.lora_a}
        tuning = Tuning(prompts, lora, self.lora_scale)
        return tuning if tuning else None

    def prepend(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input embeddings [B, T, H] with the trainable prefix first (and the mask widened)."""
        if self.prompt is None:
            return embeds, attention_mask
        batch = embeds.shape[0]
        prefix = self.prompt.to(embeds.dtype).expand(batch, -1, -1)
        if attention_mask is not None:
            ones = attention_mask.new_ones(batch, self.pre_seq_len)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        return torch.cat([prefix, embeds], dim=1), attention_mask

    def save_adapter(self, directory: str | Path, base_model: str = "") -> Path:
        """Writes the LoRA factors as a PEFT adapter (the layout `peft.PeftModel.from_pretrained`
        reads); InvalidInput for prompt tuning, which PEFT stores differently."""
        if self.mode != "lora":
            raise InvalidInput(f"save_adapter writes LoRA adapters; this model is tuned with {self.mode!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        layers = f"{self.family.base_prefixes[0]}{self.family.layers_name}"
        tensors = {}
        for key, (block, target) in self._lora_keys.items():
            name = f"base_model.model.{layers}.{block}.{target}"
            tensors[f"{name}.lora_A.weight"] = self.lora_a[key].detach().contiguous().clone()
            tensors[f"{name}.lora_B.weight"] = self.lora_b[key].detach().contiguous().clone()
        save_file(tensors, str(directory / "adapter_model.safetensors"))
        rank = next(iter(self.lora_a.values())).shape[0]
        config = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": rank, "lora_alpha": self.lora_scale * rank, "lora_dropout": 0.0, "bias": "none",
            "target_modules": self.targets, "fan_in_fan_out": False, "inference_mode": True,
            "init_lora_weights": True, "modules_to_save": None,
        }
        (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory


def shifted_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's logits against the next label (-100: ignored),
    as transformers' causal LMs compute it."""
    shifted = logits[:, :-1].flatten(0, 1).float()
    return nn.functional.cross_entropy(shifted, labels[:, 1:].flatten().to(logits.device), ignore_index=-100)


def tuned_logits(head: ClientHead, layers: RemoteSequential, tuning: TrainableTuning, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, T, vocab] of `input_ids` through the swarm with the trainable prefix and the
    servers' prompts and LoRA (the prefix's own positions are dropped)."""
    embeds, mask = tuning.prepend(head.embed(input_ids), attention_mask)
    hidden = layers(embeds, mask, tuning=tuning.tuning())
    return head.logits(hidden[:, tuning.pre_seq_len:])


@torch.no_grad()
def tuned_greedy(head: ClientHead, layers: RemoteSequential, tuning: TrainableTuning, input_ids: torch.Tensor,
                 max_new_tokens: int, stop_ids: Sequence[int] = ()) -> torch.Tensor:
    """Greedy continuation of `input_ids` [1, T] in one swarm session opened with the tuning
    (the trainable prefix goes first in the prefill); stops after a token in `stop_ids`."""
    if input_ids.shape[0] != 1:
        raise InvalidInput(f"tuned_greedy decodes one sequence at a time, got a batch of {input_ids.shape[0]}")
    embeds, _ = tuning.prepend(head.embed(input_ids), None)
    out = input_ids
    with layers.inference_session(embeds.shape[1] + max_new_tokens, tuning=tuning.tuning()) as session:
        hidden = session.step(embeds)
        for _ in range(max_new_tokens):
            token = head.logits(hidden[:, -1:]).argmax(-1)
            out = torch.cat([out, token], dim=1)
            if int(token) in stop_ids:
                break
            hidden = session.step(head.embed(token))
    return out
