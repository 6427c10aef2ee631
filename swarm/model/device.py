"""Where served blocks run and in what dtype: `--device` and `--torch-dtype auto` resolved.

    device = resolve_device("auto")                 # cuda when present, else cpu
    dtype = serving_dtype("auto", config, device)   # bf16 on a GPU that has it

Devices: "cpu", "cuda" (the current CUDA device), "cuda:N", "auto". A CUDA device that this
machine does not have is a `DeviceUnavailable` that says what was found. The "auto" dtype
is the checkpoint's own on CPU; on a GPU, a float32 checkpoint is served in bfloat16 where
the GPU supports it (Ampere and newer), else float16, since float32 halves what fits and
runs far slower there. Not here: loading (`swarm.model.families.stack`), quantizing
(`swarm.model.quantize`).
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

from swarm.model.checkpoint import checkpoint_dtype, resolve_dtype
from swarm.model.options import DeviceUnavailable, parse_device


def resolve_device(text: str) -> torch.device:
    """The torch device for a --device value; `DeviceUnavailable` if it is not on this machine."""
    parse_device(text)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"torch {torch.__version__} (CUDA {torch.version.cuda or 'not built in'})"
            raise DeviceUnavailable(f"--device {text}: no CUDA device is usable here with {built}; "
                                    "use --device cpu, or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailable(f"--device {text}: this machine has {count} CUDA device(s), "
                                    f"cuda:0..cuda:{count - 1}")
    return device


def serving_dtype(requested: torch.dtype | str, config: PretrainedConfig, device: torch.device) -> torch.dtype:
    """The dtype blocks compute in: the requested one, or for "auto" the checkpoint's (CPU) or a
    16-bit one (GPU, see the module doc)."""
    if requested != "auto" or device.type != "cuda":
        return resolve_dtype(requested, config)
    stored = checkpoint_dtype(config)
    if stored in (torch.float16, torch.bfloat16):
        return stored
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device (what the driver reports); None for the CPU."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work (timings on CUDA are wrong without it); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
