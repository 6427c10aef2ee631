"""The serving options `--quantization` and `--device` as text, checked without importing torch.

A command line validates them before anything slow (`node.start_command`'s preflight);
`swarm.model.quantize` and `swarm.model.device` act on them once torch is loaded.
"""

from __future__ import annotations

import importlib.util
import re

from swarm.errors import SwarmError

QUANTIZATIONS = ("none", "int8", "nf4")
"""Accepted --quantization values; records carry one of them (other peers' may be newer)."""
INSTALL_HINT = "pip install 'swarm-llm[quantization]' (bitsandbytes)"

DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d{1,3})?")
"""Accepted --device values."""


class QuantizationUnavailable(SwarmError):
    """A quantization mode that this machine cannot run (unknown name, no bitsandbytes)."""


class DeviceUnavailable(SwarmError):
    """A --device this machine does not have (no CUDA, or fewer GPUs)."""


def check_quantization(mode: str) -> None:
    """`QuantizationUnavailable` unless `mode` is known and, if it quantizes, bitsandbytes is installed
    (found, not imported: cheap)."""
    if mode not in QUANTIZATIONS:
        raise QuantizationUnavailable(f"unknown quantization {mode!r}; expected one of {', '.join(QUANTIZATIONS)}")
    if mode != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailable(f"--quantization {mode} needs bitsandbytes, which is not installed: "
                                      f"{INSTALL_HINT}")


def parse_device(text: str) -> str:
    """The --device text if well-formed (cpu, cuda, cuda:N, auto); ValueError otherwise."""
    if not DEVICE_PATTERN.fullmatch(text):
        raise ValueError(f"--device must be cpu, cuda, cuda:N or auto, got {text!r}")
    return text
