"""What the SmolLM2 benchmarks (`local`, `mixed`) share: progress lines, logging, prompts, workdir."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import torch

WORKDIR_ENV = "SWARM_BENCH_WORKDIR"
"""Set by scripts/bench so that its shell trap finds the pids files."""


def progress(message: str) -> None:
    """A progress line on stderr (the report alone goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def quiet_logging() -> None:
    """Warnings only, unless SWARM_LOG_LEVEL says otherwise: progress lines say what INFO would."""
    from swarm.logs import setup_logging

    setup_logging()
    if "SWARM_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)


def chat_ids(path: str, prompt: str) -> torch.Tensor:
    """The prompt as one user message with the checkpoint's chat template, [1, T] ids."""
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(path)
    encoded = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
    return torch.as_tensor(encoded["input_ids"])
