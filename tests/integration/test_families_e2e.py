"""Every model family, served by 3 real server processes, generates what transformers does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from client.model import AutoDistributedModelForCausalLM
from tests.integration.conftest import start_swarm
from tests.integration.slicing_models import FAMILY_NAMES, VOCAB


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_greedy_generation_equals_local(family: str, tmp_path: Path) -> None:
    running = start_swarm(tmp_path, family, ["0:2", "2:4", "4:6"])
    try:
        model = AutoDistributedModelForCausalLM.from_pretrained(running.model_dir, running.peers)
        reference = AutoModelForCausalLM.from_pretrained(running.model_dir, dtype=torch.float32).eval()
        ids = torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
        try:
            with model.inference_session(max_length=30, batch_size=2) as session:
                out = model.generate(ids, max_new_tokens=16, do_sample=False)
                assert len(session.route.split(" -> ")) == 3
        finally:
            model.close()
        expected = reference.generate(ids, max_new_tokens=16, do_sample=False)
        assert torch.equal(out, expected), f"{family}: {out.tolist()} != {expected.tolist()}"
    finally:
        running.swarm.stop_all()
