"""Reading a PEFT LoRA adapter directory into a `Tuning` (what `swarm-node start --adapter` serves).

A PEFT adapter is `adapter_config.json` (peft_type LORA, r, lora_alpha, ...) and
`adapter_model.safetensors` with tensors named
`base_model.model.<layers>.<block>.<path>.lora_A.weight` ([r, in]) and `...lora_B.weight`
([out, r]), where `<layers>` is the family's layer list ("model.layers", "transformer.h").
Options this reader cannot honour (DoRA, rsLoRA scaling, per-module ranks or alphas,
biases) are refused with a message rather than served wrongly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.torch import load_file

from swarm.model.checkpoint import CheckpointError
from swarm.model.families import Family
from swarm.tuning import Tuning

_UNSUPPORTED = {"use_dora": True, "use_rslora": True, "bias": "all", "fan_in_fan_out": True}


def read_peft_adapter(directory: str | Path, family: Family, num_blocks: int) -> Tuning:
    """The adapter's LoRA factors by (block, path in the block); CheckpointError if unusable."""
    directory = Path(directory)
    config_file, weights_file = directory / "adapter_config.json", directory / "adapter_model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{directory} is not a PEFT adapter: it needs adapter_config.json and "
                              "adapter_model.safetensors")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "LORA":
        raise CheckpointError(f"{directory}: only LoRA adapters are served, not {config.get('peft_type')!r}")
    for option, bad in _UNSUPPORTED.items():
        if config.get(option) == bad or (option == "bias" and config.get("bias", "none") != "none"):
            raise CheckpointError(f"{directory}: adapter option {option}={config.get(option)!r} is not supported")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise CheckpointError(f"{directory}: per-module ranks or alphas (rank_pattern/alpha_pattern) are not supported")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    layers = re.escape(f"{family.base_prefixes[0]}{family.layers_name}")
    pattern = re.compile(rf"^base_model\.model\.{layers}\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")
    halves: dict[tuple[int, str], dict[str, object]] = {}
    for name, tensor in load_file(str(weights_file)).items():
        match = pattern.match(name)
        if match is None:
            raise CheckpointError(f"{directory}: unexpected tensor {name!r} for a {family.name} model")
        block, path, half = int(match.group(1)), match.group(2), match.group(3)
        if block >= num_blocks:
            raise CheckpointError(f"{directory}: tensor {name!r} is for block {block}; the model has {num_blocks}")
        halves.setdefault((block, path), {})[half] = tensor.float()
    lora = {}
    for key, pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"{directory}: block {key[0]} {key[1]!r} lacks lora_A or lora_B")
        lora[key] = (pair["A"], pair["B"])
    if not lora:
        raise CheckpointError(f"{directory}: the adapter holds no LoRA factors")
    return Tuning(lora=lora, lora_scale=alpha / rank)  # type: ignore[arg-type]
