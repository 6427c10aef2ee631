"""Family detection, dtype resolution, checkpoint layouts and the Mixtral weight fusion (no files)."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import (
    BloomConfig,
    FalconConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Qwen2Config,
)

from swarm.model.checkpoint import CheckpointError, UnsupportedModel, locate_checkpoint, resolve_dtype
from swarm.model.families import family_class, model_info
from swarm.model.families.bloom import BloomFamily
from swarm.model.families.falcon import FalconFamily
from swarm.model.families.llama import LlamaFamily
from swarm.model.families.mixtral import MixtralFamily

SMALL = {"hidden_size": 32, "num_attention_heads": 4, "vocab_size": 64, "num_hidden_layers": 2}


@pytest.mark.parametrize(
    ("config", "family"),
    [
        (LlamaConfig(**SMALL), LlamaFamily),
        (MistralConfig(**SMALL), LlamaFamily),
        (Qwen2Config(**SMALL), LlamaFamily),
        (MixtralConfig(**SMALL), MixtralFamily),
        (BloomConfig(hidden_size=32, n_head=4, n_layer=2), BloomFamily),
        (FalconConfig(**SMALL), FalconFamily),
    ],
)
def test_family_detected_from_model_type(config: object, family: type) -> None:
    assert family_class(config) is family  # type: ignore[arg-type]


def test_unsupported_model_type_names_the_supported_ones() -> None:
    with pytest.raises(UnsupportedModel, match=r"'gpt2' is not supported; supported: bloom, falcon, llama"):
        family_class(GPT2Config())


def test_model_info_and_auto_dtype() -> None:
    config = Qwen2Config(**SMALL, dtype="bfloat16")
    info = model_info(config)
    assert (info.family, info.model_type, info.num_blocks, info.hidden_size, info.vocab_size) == (
        "llama", "qwen2", 2, 32, 64,
    )
    assert info.dtype == torch.bfloat16
    assert model_info(LlamaConfig(**SMALL)).dtype == torch.float32  # absent -> float32


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("auto", torch.float16),
        ("float32", torch.float32),
        ("bf16", torch.bfloat16),
        ("fp16", torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_resolve_dtype(requested: str | torch.dtype, expected: torch.dtype) -> None:
    assert resolve_dtype(requested, LlamaConfig(**SMALL, dtype="float16")) == expected


@pytest.mark.parametrize("bad", ["int8", "float64", torch.int8])
def test_resolve_dtype_rejects_unservable(bad: str | torch.dtype) -> None:
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype(bad, LlamaConfig(**SMALL))


def test_attention_implementation_is_always_set() -> None:
    # Left None, transformers silently runs attention non-causally.
    config = LlamaConfig(**SMALL)
    LlamaFamily(config)
    assert config._attn_implementation == "sdpa"
    bloom = BloomConfig(hidden_size=32, n_head=4, n_layer=2)
    BloomFamily(bloom)
    assert bloom._attn_implementation == "eager"


@pytest.mark.parametrize(
    ("config", "elements"),
    [
        (LlamaConfig(**SMALL, num_key_value_heads=2), 2 * 2 * 8),
        (BloomConfig(hidden_size=32, n_head=4, n_layer=2), 2 * 32),
        (FalconConfig(**SMALL, new_decoder_architecture=True, num_kv_heads=2), 2 * 4 * 8),
        (FalconConfig(**SMALL, multi_query=True), 2 * 8),
        (FalconConfig(**SMALL, multi_query=False, alibi=True), 2 * 32),
    ],
)
def test_kv_elements_per_token(config: object, elements: int) -> None:
    assert family_class(config)(config).kv_elements_per_token() == elements  # type: ignore[arg-type]


def test_checkpoint_prefixes_and_tied_heads() -> None:
    bloom = BloomFamily(BloomConfig(hidden_size=32, n_head=4, n_layer=2))
    prefixed = {"transformer.h.0.mlp.x", "transformer.word_embeddings.weight"}
    assert bloom.base_prefix(prefixed) == "transformer."
    assert bloom.base_prefix({"h.0.mlp.x", "word_embeddings.weight"}) == ""
    keys = bloom.head_keys({"word_embeddings.weight", "ln_f.weight", "h.0.x"})
    assert (keys.embed, keys.embed_norm, keys.final_norm, keys.lm_head) == (
        "word_embeddings.weight", "word_embeddings_layernorm.", "ln_f.", None,
    )
    untied = LlamaFamily(LlamaConfig(**SMALL, tie_word_embeddings=False))
    assert untied.head_keys({"model.embed_tokens.weight", "lm_head.weight"}).lm_head == "lm_head.weight"
    assert untied.head_keys({"model.embed_tokens.weight"}).lm_head is None  # missing -> reuse embeddings
    tied = LlamaFamily(LlamaConfig(**SMALL, tie_word_embeddings=True))
    assert tied.head_keys({"model.embed_tokens.weight", "lm_head.weight"}).lm_head is None
    with pytest.raises(CheckpointError, match="no llama weights"):
        tied.base_prefix({"transformer.h.0.x"})


def _mixtral() -> MixtralFamily:
    return MixtralFamily(MixtralConfig(**SMALL, intermediate_size=16, num_local_experts=3))


def test_mixtral_per_expert_weights_are_fused() -> None:
    family = _mixtral()
    shapes = {"w1": (16, 32), "w2": (32, 16), "w3": (16, 32)}  # [I, H], [H, I], [I, H]
    w = {(e, n): torch.randn(shape) for e in range(3) for n, shape in shapes.items()}
    weights = {f"block_sparse_moe.experts.{e}.{n}.weight": t for (e, n), t in w.items()}
    weights["block_sparse_moe.gate.weight"] = gate = torch.randn(3, 32)
    weights["input_layernorm.weight"] = torch.ones(32)
    fused = family.convert_layer_weights(weights)
    assert set(fused) == {
        "mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight", "input_layernorm.weight",
    }
    assert fused["mlp.experts.gate_up_proj"].shape == (3, 32, 32)
    assert fused["mlp.experts.down_proj"].shape == (3, 32, 16)
    for e in range(3):
        assert torch.equal(fused["mlp.experts.gate_up_proj"][e, :16], w[e, "w1"])  # gate rows first
        assert torch.equal(fused["mlp.experts.gate_up_proj"][e, 16:], w[e, "w3"])
        assert torch.equal(fused["mlp.experts.down_proj"][e], w[e, "w2"])
    assert fused["mlp.gate.weight"] is gate


def test_mixtral_fused_layout_passes_through_and_missing_expert_fails() -> None:
    family = _mixtral()
    fused = {
        "mlp.experts.gate_up_proj": torch.zeros(3, 32, 32),
        "mlp.experts.down_proj": torch.zeros(3, 32, 16),
    }
    assert family.convert_layer_weights(dict(fused)) == fused
    partial = {
        f"block_sparse_moe.experts.{e}.{n}.weight": torch.zeros(1) for e in (0, 2) for n in ("w1", "w2", "w3")
    }
    with pytest.raises(CheckpointError, match="experts 0..2"):
        family.convert_layer_weights(partial)


@pytest.mark.parametrize("path", ["/no/such/checkpoint", "./relative/missing", "a/b/c"])
def test_missing_local_directory_is_a_clear_error(path: str) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        locate_checkpoint(path)


def test_hub_id_without_a_reachable_hub_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face hub"):
        locate_checkpoint("some-org/some-model")
