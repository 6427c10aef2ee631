"""Where a model comes from, checked in well under a second before anything loads.

`check_model_source(name)` turns what the user typed after --model into what loading
will read (a checkpoint directory, or a hub id) and the model's number of blocks, from
`config.json` read as plain JSON: no torch, no transformers. It fails at once with a
`ModelUnavailable` that says what to do when the name is

- a path that is not a directory, or a directory without `config.json`, or whose
  safetensors weights are missing, truncated or not safetensors (from their headers and
  sizes, a few bytes read per file);
- a hub id that is neither in the Hugging Face cache nor fetchable: the hub's host is
  probed first (`HUB_PROBE_TIMEOUT`), because huggingface_hub's own retries take about a
  minute to give up where no hub is reachable.

The default model's aliases resolve to its converted checkpoint (`swarm.default_model`,
which converts it on first use). Not here: reading weights (`swarm.model.checkpoint`).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from swarm.default_model import resolve_model
from swarm.errors import SwarmError

HUB_PROBE_TIMEOUT = 3.0
"""Seconds the hub's host (or the proxy to it) may take to accept a TCP connection."""

_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
"""Where configs keep their number of transformer blocks (BLOOM: n_layer)."""

_MAX_HEADER = 100 << 20
"""Largest safetensors header believed (the format's own limit)."""

_WHAT_TO_PASS = "pass a checkpoint directory (with config.json), a reachable hub id, or 'default'"


class ModelUnavailable(SwarmError):
    """The model is neither a readable checkpoint directory nor a hub id that can be fetched."""


@dataclass(frozen=True)
class ModelSource:
    """A model that loading will find."""

    path: str
    """What to load: a local checkpoint directory, or a hub id."""
    num_blocks: int | None
    """Transformer blocks per its config.json; None when the config does not say."""


def check_model_source(name: str) -> ModelSource:
    """The model behind `name` (path, hub id or default alias); `ModelUnavailable` if none."""
    path = resolve_model(name)
    directory = Path(path).expanduser()
    if directory.is_dir():
        config = directory / "config.json"
        if not config.is_file():
            raise ModelUnavailable(f"{path} has no config.json, so it is not a checkpoint directory; "
                                   f"{_WHAT_TO_PASS}")
        _check_weights(directory)
        return ModelSource(str(directory), _num_blocks(config))
    if directory.exists():
        raise ModelUnavailable(f"{path} is a file, not a checkpoint directory; {_WHAT_TO_PASS}")
    if _looks_like_path(path):
        raise ModelUnavailable(f"checkpoint directory {path} does not exist; {_WHAT_TO_PASS}")
    return ModelSource(path, _num_blocks(_hub_config(path)))


def _looks_like_path(name: str) -> bool:
    # hub ids are "name" or "org/name"; anything else is meant as a local directory
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _num_blocks(config: Path) -> int | None:
    try:
        values = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelUnavailable(f"cannot read {config} ({error}); {_WHAT_TO_PASS}") from None
    if isinstance(values, dict):
        for key in _LAYER_KEYS:
            if isinstance(values.get(key), int) and values[key] > 0:
                return int(values[key])
    return None  # an unusual config: loading will tell (or cope)


def _check_weights(directory: Path) -> None:
    """`ModelUnavailable` unless the safetensors weights are there, whole (headers and sizes agree)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelUnavailable(f"unreadable checkpoint index {index} ({error}); download or save the "
                                   "checkpoint again") from None
    elif (directory / "model.safetensors").is_file():
        files = {"model.safetensors"}
    else:
        raise ModelUnavailable(f"{directory} has no model.safetensors or model.safetensors.index.json (only "
                               "safetensors checkpoints are read); save it with save_pretrained()")
    for name in sorted(files):
        problem = _safetensors_problem(directory / str(name))
        if problem is not None:
            raise ModelUnavailable(f"{directory / str(name)} {problem}; download or save the checkpoint again")


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file (missing, truncated, not one), from its header alone."""
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size)) if 0 < size <= _MAX_HEADER else None
        length = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"is not a safetensors file ({error})"
    if not isinstance(header, dict):
        return "is not a safetensors file (no header)"
    ends = [v["data_offsets"][1] for v in header.values() if isinstance(v, dict) and "data_offsets" in v]
    if 8 + size + max(ends, default=0) > length:
        return f"is truncated ({length} of {8 + size + max(ends, default=0)} bytes)"
    return None


def _hub_config(repo_id: str) -> Path:
    """config.json of a hub model: from the local cache, else fetched if the hub answers."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(f"{repo_id!r} is not a local directory nor in the Hugging Face cache, and "
                               f"the hub is switched off (HF_HUB_OFFLINE); {_WHAT_TO_PASS}")
    problem = hub_unreachable(constants.ENDPOINT)
    if problem is not None:
        raise ModelUnavailable(f"{repo_id!r} is not a local directory, and the Hugging Face hub "
                               f"({constants.ENDPOINT}) cannot be reached ({problem}); {_WHAT_TO_PASS}")
    try:
        return Path(hf_hub_download(repo_id, "config.json", etag_timeout=HUB_PROBE_TIMEOUT))
    except Exception as error:  # huggingface_hub raises many unrelated types; all mean "not fetched"
        raise ModelUnavailable(f"{repo_id!r} could not be fetched from the Hugging Face hub "
                               f"({type(error).__name__}); check the id, or {_WHAT_TO_PASS}") from error


def hub_unreachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why `endpoint`'s host (or the proxy configured for it) takes no connection; None if it does.

    Runs in a daemon thread because name resolution has no timeout of its own.
    """
    url = urlsplit(endpoint)
    proxy = urllib.request.getproxies().get(url.scheme or "https")
    target = urlsplit(proxy) if proxy else url
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as error:
            outcome.append(error.strerror or str(error) or type(error).__name__)

    worker = threading.Thread(target=probe, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer from {host} within {timeout:g} s"
