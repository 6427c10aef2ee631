"""Mixtral: a Mistral-style decoder whose MLP is a sparse mixture of experts.

Checkpoints store each expert as three matrices under `block_sparse_moe.experts.{e}.`
(`w1` gate, `w3` up: [I, H]; `w2` down: [H, I]) and the router as
`block_sparse_moe.gate.weight`. The transformers 5 module holds all experts fused:
`mlp.experts.gate_up_proj` [E, 2I, H] (gate rows then up rows) and `mlp.experts.down_proj`
[E, H, I], router `mlp.gate.weight`. This adapter converts one layer at a time, the same
way transformers' own loading does; a checkpoint already in the fused layout passes through.
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.models.mixtral import modeling_mixtral

from swarm.model.checkpoint import CheckpointError
from swarm.model.families.llama import LlamaFamily

_EXPERT = re.compile(r"^(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w[123])\.weight$")


class MixtralFamily(LlamaFamily):
    """Adapter for Mixtral checkpoints."""

    name: ClassVar[str] = "mixtral"
    model_types: ClassVar[tuple[str, ...]] = ("mixtral",)
    modules: ClassVar[dict[str, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]]] = {
        "mixtral": (
            modeling_mixtral.MixtralDecoderLayer,
            modeling_mixtral.MixtralRotaryEmbedding,
            modeling_mixtral.MixtralRMSNorm,
        )
    }

    def __init__(self, config: PretrainedConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        # What transformers picks by default for this model (a batched expert matmul).
        config._experts_implementation = "grouped_mm"

    def convert_layer_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        experts: dict[str, dict[int, torch.Tensor]] = {"w1": {}, "w2": {}, "w3": {}}
        out: dict[str, torch.Tensor] = {}
        for name, tensor in weights.items():
            match = _EXPERT.match(name)
            if match:
                experts[match.group(2)][int(match.group(1))] = tensor
            else:
                out[name.replace("block_sparse_moe.", "mlp.", 1)] = tensor
        if any(experts.values()):
            out.update(self._fuse_experts(experts))
        return out

    def _fuse_experts(self, experts: dict[str, dict[int, torch.Tensor]]) -> dict[str, torch.Tensor]:
        count = int(self.config.num_local_experts)
        for kind, found in experts.items():
            if sorted(found) != list(range(count)):
                raise CheckpointError(f"expected {kind} for experts 0..{count - 1}, found {sorted(found)}")

        def stacked(kind: str) -> torch.Tensor:
            return torch.stack([experts[kind][e] for e in range(count)])

        gate_up = torch.cat([stacked("w1"), stacked("w3")], dim=1)
        down = stacked("w2")
        # The per-expert tensors are dropped as soon as the fused ones exist.
        experts.clear()
        return {"mlp.experts.gate_up_proj": gate_up, "mlp.experts.down_proj": down}
