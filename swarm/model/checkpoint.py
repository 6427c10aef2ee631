"""Reading a Hugging Face checkpoint piecemeal: find it, read its config, load chosen tensors.

A checkpoint is a directory holding `config.json` and safetensors weights: one
`model.safetensors`, or shards listed in `model.safetensors.index.json`. Tensors are read
lazily with `safe_open`, only the keys asked for, so memory grows with what a server
serves, not with the model. A hub id (``org/name``) is fetched with huggingface_hub,
config and index first, then only the shards that hold the wanted keys; without a
reachable hub that fails with a `CheckpointError` that says so.

This module knows nothing of model families (`swarm.model.families` maps keys to modules) and
never builds a module. PyTorch `.bin` checkpoints are not read (pickle is not loaded).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, PretrainedConfig

from swarm.errors import SwarmError

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
"""Names accepted for a serving dtype (plus "auto": the checkpoint's own)."""

SERVABLE_DTYPES = frozenset({torch.float32, torch.bfloat16, torch.float16})


class CheckpointError(SwarmError):
    """A checkpoint that cannot be found, fetched, read or understood."""


class UnsupportedModel(CheckpointError):
    """The checkpoint's architecture (config.model_type) has no family adapter."""


def checkpoint_dtype(config: PretrainedConfig) -> torch.dtype:
    """The dtype the checkpoint was saved in (config `dtype`/`torch_dtype`), float32 if absent."""
    for attr in ("dtype", "torch_dtype"):
        value = getattr(config, attr, None)
        if isinstance(value, torch.dtype) and value in SERVABLE_DTYPES:
            return value
        if isinstance(value, str) and value in DTYPES:
            return DTYPES[value]
    return torch.float32


def resolve_dtype(dtype: torch.dtype | str, config: PretrainedConfig) -> torch.dtype:
    """Turns "auto", a dtype name or a torch dtype into one of the servable dtypes."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype == "auto":
        resolved = checkpoint_dtype(config)
    elif dtype in DTYPES:
        resolved = DTYPES[dtype]
    else:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, {', '.join(DTYPES)}")
    if resolved not in SERVABLE_DTYPES:
        raise ValueError(f"dtype {resolved} is not servable; use float32, bfloat16 or float16")
    return resolved


def _looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else is meant as a local directory.
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def locate_checkpoint(
    model: str | os.PathLike[str], *, wanted: Callable[[str], bool] | None = None
) -> Path:
    """The local directory of `model`, fetching it from the hub when it is not a directory.

    `wanted` selects tensor names: for a hub id, only the shards holding a wanted key are
    downloaded (None: config and index only). A local directory is returned as is.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    name = os.fspath(model)
    if _looks_like_path(name) or path.exists():
        raise CheckpointError(f"checkpoint directory {name!r} does not exist or is not a directory")
    return _fetch_from_hub(name, wanted)


def _fetch_from_hub(repo_id: str, wanted: Callable[[str], bool] | None) -> Path:
    """Downloads config + index, then the shards that hold wanted keys (huggingface_hub)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency of transformers
        raise CheckpointError(f"{repo_id!r} is not a local directory and huggingface_hub is missing") from e

    def download(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as e:  # huggingface_hub raises many unrelated types; all mean "not fetched"
            raise CheckpointError(
                f"{repo_id!r} is not a local directory and could not be fetched from the "
                f"Hugging Face hub ({type(e).__name__}: {e}); pass a local checkpoint directory"
            ) from e

    directory = download([CONFIG_FILE, INDEX_FILE])
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(f"hub repository {repo_id!r} has no {CONFIG_FILE}")
    if wanted is None:
        return directory
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = _read_index(index)
        shards = sorted({file for key, file in weight_map.items() if wanted(key)})
    else:
        shards = [SINGLE_FILE]
    logger.info("fetching %s shard(s) of %s from the hub: %s", len(shards), repo_id, shards)
    return download([CONFIG_FILE, INDEX_FILE, *shards])


def load_config(directory: Path) -> PretrainedConfig:
    """The transformers config of a local checkpoint directory."""
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}")
    try:
        config = AutoConfig.from_pretrained(directory)
    except (ValueError, KeyError, OSError) as e:
        raise UnsupportedModel(f"cannot read the config of {directory}: {e}") from e
    if not isinstance(config, PretrainedConfig):  # AutoConfig's return is untyped
        raise UnsupportedModel(f"{directory}/{CONFIG_FILE} is not a transformers model config")
    return config


def _read_index(index_path: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"unreadable checkpoint index {index_path}: {e}") from e
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"checkpoint index {index_path} has no weight_map object")
    return {str(k): str(v) for k, v in weight_map.items()}


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """`safe_open(path)`, whose errors (a truncated or corrupt file) are `CheckpointError`s."""
    try:
        with safe_open(path, framework="pt") as handle:
            yield handle
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); download or save the "
                              "checkpoint again") from e


class CheckpointReader:
    """Reads chosen tensors of one checkpoint directory, lazily, file by file.

    `bytes_read` counts the bytes of every tensor read so far (as stored), which tests and
    logs use to show that a server read only its own blocks.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.bytes_read = 0
        self._files = self._map_keys()

    def _map_keys(self) -> dict[str, str]:
        index = self.directory / INDEX_FILE
        if index.is_file():
            return _read_index(index)
        single = self.directory / SINGLE_FILE
        if single.is_file():
            with _opened(single) as f:
                return {key: SINGLE_FILE for key in f.keys()}
        raise CheckpointError(
            f"{self.directory} has no {SINGLE_FILE} or {INDEX_FILE} "
            "(only safetensors checkpoints are supported)"
        )

    def keys(self) -> list[str]:
        """Every tensor name in the checkpoint."""
        return list(self._files)

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def read(
        self,
        keys: Iterable[str],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> dict[str, torch.Tensor]:
        """The named tensors; floating ones converted to `dtype` (None keeps the stored one)."""
        by_file: dict[str, list[str]] = {}
        for key in keys:
            if key not in self._files:
                raise CheckpointError(f"tensor {key!r} is not in the checkpoint {self.directory}")
            by_file.setdefault(self._files[key], []).append(key)
        tensors: dict[str, torch.Tensor] = {}
        for file, file_keys in by_file.items():
            tensors.update(self._read_file(file, file_keys, dtype, device))
        return tensors

    def _read_file(
        self, file: str, keys: list[str], dtype: torch.dtype | None, device: torch.device | str
    ) -> dict[str, torch.Tensor]:
        path = self.directory / file
        if not path.is_file():
            raise CheckpointError(f"checkpoint shard {path} is missing")
        out: dict[str, torch.Tensor] = {}
        with _opened(path) as f:
            for key in keys:
                tensor = f.get_tensor(key)
                self.bytes_read += tensor.numel() * tensor.element_size()
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                out[key] = tensor.to(device)
        return out
