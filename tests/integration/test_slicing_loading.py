"""Loading slices of checkpoints: only the needed tensors, sharded or not, any dtype, clear errors."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, GPT2Config

import swarm.model.checkpoint
from swarm.model.head import load_client_head
from swarm.model.checkpoint import INDEX_FILE, CheckpointError, UnsupportedModel
from swarm.model.families import load_block_stack, read_model_info
from swarm.errors import InvalidInput, NotServed, SessionStateError
from swarm.records import BlockRange
from tests.integration.slicing_models import left_padded, load_reference, save_checkpoint


class OpenSpy:
    """Stands in for `safe_open` in swarm.model.checkpoint; records files opened and keys read."""

    opened: list[str] = []
    read: list[str] = []

    def __init__(self, path: Any, framework: str, **kwargs: Any) -> None:
        OpenSpy.opened.append(Path(path).name)
        self._inner = safe_open(path, framework=framework, **kwargs)

    def __enter__(self) -> OpenSpy:
        self._file = self._inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)

    def keys(self) -> list[str]:
        return list(self._file.keys())

    def get_tensor(self, key: str) -> torch.Tensor:
        OpenSpy.read.append(key)
        return self._file.get_tensor(key)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[OpenSpy]:
    OpenSpy.opened, OpenSpy.read = [], []
    monkeypatch.setattr(swarm.model.checkpoint, "safe_open", OpenSpy)
    return OpenSpy


def weight_map(path: Path) -> dict[str, str]:
    return dict(json.loads((path / INDEX_FILE).read_text())["weight_map"])


@pytest.mark.parametrize("name", ["llama", "mixtral"])
def test_loads_only_the_served_blocks(name: str, tmp_path: Path, spy: type[OpenSpy]) -> None:
    path = save_checkpoint(name, tmp_path, layers=6, max_shard_size="40KB")
    shards = weight_map(path)
    assert len(set(shards.values())) >= 4
    stack = load_block_stack(path, BlockRange(2, 4))

    wanted = ("model.layers.2.", "model.layers.3.")
    assert spy.read and all(k.startswith(wanted) for k in spy.read)
    assert set(spy.read) == {k for k in shards if k.startswith(wanted)}
    assert set(spy.opened) <= {shards[k] for k in spy.read}  # other shards never opened
    spy.opened, spy.read = [], []

    reference = load_reference(path)
    expected = [p for layer in reference.model.layers[2:4] for p in layer.parameters()]
    total = sum(p.numel() for p in reference.parameters())
    assert stack.num_parameters() == sum(p.numel() for p in expected)
    assert stack.loaded_bytes == 4 * stack.num_parameters()  # float32, nothing else read
    assert stack.num_parameters() < total / 2


def test_client_head_reads_only_its_tensors(tmp_path: Path, spy: type[OpenSpy]) -> None:
    path = save_checkpoint("llama", tmp_path, max_shard_size="40KB")  # tied embeddings
    head = load_client_head(path)
    assert set(spy.read) == {"model.embed_tokens.weight", "model.norm.weight"}
    assert head.lm_head.weight is head.embedding.weight
    assert head.info.family == "llama" and head.config.model_type == "llama"


def test_client_head_untied_and_bloom_embedding_norm(tmp_path: Path, spy: type[OpenSpy]) -> None:
    head = load_client_head(save_checkpoint("mistral", tmp_path / "m"))
    assert set(spy.read) == {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    assert head.lm_head.weight is not head.embedding.weight
    spy.read = []
    bloom = load_client_head(save_checkpoint("bloom", tmp_path / "b"))
    assert bloom.embed_norm is not None
    assert {k for k in spy.read if "layernorm" in k} == {
        "transformer.word_embeddings_layernorm.weight",
        "transformer.word_embeddings_layernorm.bias",
    }


def test_sharded_checkpoint_gives_the_same_outputs(tmp_path: Path) -> None:
    single = save_checkpoint("qwen2", tmp_path / "single", seed=3)
    sharded = save_checkpoint("qwen2", tmp_path / "sharded", seed=3, max_shard_size="30KB")
    assert (sharded / INDEX_FILE).is_file() and not (single / INDEX_FILE).exists()
    ids, mask, positions = left_padded([4, 2], 4)
    outputs = []
    for path in (single, sharded):
        head, stack = load_client_head(path), load_block_stack(path, BlockRange(1, 3))
        hidden = stack.forward(
            head.embed(ids), blocks=BlockRange(1, 3), position_ids=positions, attention_mask=mask
        )
        outputs.append(head.logits(hidden))
    assert torch.equal(outputs[0], outputs[1])


def test_bare_bloom_checkpoint_without_transformer_prefix(tmp_path: Path) -> None:
    # Older BLOOM checkpoints (e.g. bloom-560m) store "h.0..." instead of "transformer.h.0...".
    path = save_checkpoint("bloom", tmp_path / "prefixed")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((path / "config.json").read_text())
    with safe_open(path / "model.safetensors", framework="pt") as f:
        tensors = {k.removeprefix("transformer."): f.get_tensor(k) for k in f.keys()}
    save_file(tensors, bare / "model.safetensors", metadata={"format": "pt"})
    ids, mask, positions = left_padded([4], 4)
    outputs = []
    for source in (path, bare):
        head, stack = load_client_head(source), load_block_stack(source, BlockRange(0, 4))
        hidden = stack.forward(
            head.embed(ids), blocks=BlockRange(0, 4), position_ids=positions, attention_mask=mask
        )
        outputs.append(head.logits(hidden))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("dtype", ["bfloat16", torch.float16])
def test_half_precision_loading(tmp_path: Path, dtype: str | torch.dtype) -> None:
    path = save_checkpoint("llama", tmp_path)
    full = load_block_stack(path, BlockRange(0, 4))
    half = load_block_stack(path, BlockRange(0, 4), dtype=dtype)
    expected = torch.bfloat16 if dtype == "bfloat16" else torch.float16
    assert half.dtype == expected and all(p.dtype == expected for p in half.layers.parameters())
    hidden = torch.randn(2, 4, 32)
    _, mask, positions = left_padded([4, 4], 4)
    cache = half.new_cache(BlockRange(0, 4))
    everything = BlockRange(0, 4)
    out = half.forward(hidden, blocks=everything, position_ids=positions, attention_mask=mask, cache=cache)
    ref = full.forward(hidden, blocks=everything, position_ids=positions, attention_mask=mask)
    assert out.dtype == expected and out.shape == ref.shape
    assert (out.float() - ref).norm() / ref.norm() < 0.05
    assert cache.nbytes() == 2 * 4 * half.cache_bytes_per_token(BlockRange(0, 4))


def test_auto_dtype_is_the_checkpoints(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(save_checkpoint("falcon_new", tmp_path / "f32"))
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert read_model_info(tmp_path / "bf16").dtype == torch.bfloat16
    assert load_block_stack(tmp_path / "bf16", BlockRange(0, 1)).dtype == torch.bfloat16
    assert load_client_head(tmp_path / "bf16").dtype == torch.bfloat16
    assert load_block_stack(tmp_path / "bf16", BlockRange(0, 1), dtype="float32").dtype == torch.float32


def test_model_info(tmp_path: Path) -> None:
    info = read_model_info(save_checkpoint("mixtral", tmp_path))
    assert (info.family, info.model_type, info.num_blocks, info.hidden_size, info.vocab_size) == (
        "mixtral", "mixtral", 4, 32, 128,
    )
    assert info.dtype == torch.float32


def test_input_validation(tmp_path: Path) -> None:
    stack = load_block_stack(save_checkpoint("falcon_mq", tmp_path), BlockRange(0, 4))
    hidden, positions = torch.randn(2, 3, 32), torch.arange(3).expand(2, 3)
    mid = BlockRange(1, 3)
    cache = stack.new_cache(mid)
    with pytest.raises(NotServed):
        stack.new_cache(BlockRange(2, 5))
    with pytest.raises(SessionStateError):
        stack.forward(hidden, blocks=BlockRange(0, 3), position_ids=positions, cache=cache)
    with pytest.raises(InvalidInput):
        stack.forward(torch.randn(2, 3, 31), blocks=mid, position_ids=positions)
    with pytest.raises(InvalidInput):
        stack.forward(hidden, blocks=mid, position_ids=positions[:, :2])
    with pytest.raises(InvalidInput):
        stack.forward(hidden, blocks=mid, position_ids=positions, attention_mask=torch.ones(2, 4))
    stack.forward(hidden, blocks=mid, position_ids=positions, cache=cache)
    with pytest.raises(InvalidInput):  # the mask must now cover past + new tokens
        stack.forward(
            hidden[:, :1], blocks=mid, position_ids=positions[:, :1], cache=cache,
            attention_mask=torch.ones(2, 1),
        )
    with pytest.raises(SessionStateError):  # batch size changed mid-session
        stack.forward(hidden[:1, :1], blocks=mid, position_ids=positions[:1, :1], cache=cache)


def test_loading_errors(tmp_path: Path) -> None:
    path = save_checkpoint("bloom", tmp_path / "bloom")
    with pytest.raises(CheckpointError, match="0:4"):
        load_block_stack(path, BlockRange(2, 6))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_block_stack(tmp_path / "missing", BlockRange(0, 1))
    gpt2 = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    AutoModelForCausalLM.from_config(gpt2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModel, match="gpt2.*supported: bloom, falcon, llama"):
        load_block_stack(tmp_path / "gpt2", BlockRange(0, 1))
    (path / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_block_stack(path, BlockRange(0, 1))


def test_reference_agrees_on_tied_head(tmp_path: Path) -> None:
    # The head alone (no blocks) matches the reference's embedding and LM head.
    path = save_checkpoint("falcon_alibi", tmp_path)
    head, ref = load_client_head(path), load_reference(path)
    ids = torch.tensor([[1, 2, 3]])
    assert_close(head.embed(ids), ref.transformer.word_embeddings(ids))
    hidden = torch.randn(1, 3, 32)
    assert_close(head.logits(hidden), ref.lm_head(ref.transformer.ln_f(hidden)))
    with pytest.raises(InvalidInput):
        head.embed(torch.tensor([[128]]))


def test_hub_id_fetches_only_config_index_and_needed_shards(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = save_checkpoint("llama", tmp_path / "source", layers=6, max_shard_size="40KB")
    shards = weight_map(source)
    calls: list[list[str]] = []

    def fake_snapshot_download(repo_id: str, *, allow_patterns: list[str], **_: object) -> str:
        # Stands in for the hub: copies the files the patterns select into a "snapshot".
        calls.append(list(allow_patterns))
        snapshot = tmp_path / "hub" / repo_id.replace("/", "--")
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            if any(fnmatch.fnmatch(file.name, p) for p in allow_patterns):
                shutil.copy(file, snapshot / file.name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert read_model_info("org/tiny").num_blocks == 6
    assert calls == [["config.json", INDEX_FILE]]
    stack = load_block_stack("org/tiny", BlockRange(2, 4))
    needed = {shards[k] for k in shards if k.startswith(("model.layers.2.", "model.layers.3."))}
    assert set(calls[-1]) - {"config.json", INDEX_FILE} == needed
    assert len(needed) < len(set(shards.values()))
    assert stack.num_parameters() > 0
    head = load_client_head("org/tiny")
    head_shards = {shards["model.embed_tokens.weight"], shards["model.norm.weight"]}
    assert set(calls[-1]) - {"config.json", INDEX_FILE} == head_shards
    assert head.info.num_blocks == 6
