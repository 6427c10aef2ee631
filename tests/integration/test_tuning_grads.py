"""Gradients through 3 real servers w.r.t. inputs, deep prompts and LoRA factors equal local autograd.

For each family (tiny random checkpoints, blocks 0:2, 2:4, 4:6 on three `swarm-node`
processes), one forward + backward of a cross-entropy loss through the swarm with
deep prompts on blocks 0, 2, 4 and LoRA on two projections of every block, against the
same loss on a local transformers model with the same tensors applied by hooks
(`tests.tuning_reference`): the loss, the input gradient and every prompt and factor
gradient agree (rtol 1e-4, fp32). The tuning must also change the output (it is applied).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM

from client.model import AutoDistributedModelForCausalLM
from client.tuning import block_targets
from swarm.model.families import family_class
from swarm.tuning import Tuning
from tests.integration.conftest import start_swarm
from tests.integration.slicing_models import VOCAB
from tests.tuning_reference import decoder_layers, random_tuning, tuned

pytestmark = pytest.mark.slow

FAMILIES = ["llama", "bloom", "falcon_new", "mixtral"]


def _clone(tuning: Tuning) -> Tuning:
    """The same values as fresh leaves (the local run's own parameters)."""
    slots = tuning.slots()
    return Tuning.from_slots([s for s, _ in slots], [t.detach().clone().requires_grad_(True) for _, t in slots],
                             tuning.lora_scale)


def _local_loss(reference: Any, ids: torch.Tensor, labels: torch.Tensor, tuning: Tuning,
                first_input: torch.Tensor) -> torch.Tensor:
    """Loss of the local model with `tuning`, block 0's input replaced by the leaf `first_input`."""
    handle = decoder_layers(reference)[0].register_forward_pre_hook(
        lambda module, args, kwargs: ((first_input, *args[1:]), kwargs) if args
        else (args, {**kwargs, "hidden_states": first_input}), with_kwargs=True)
    try:
        with tuned(reference, tuning):
            logits = reference(ids).logits
    finally:
        handle.remove()
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_through_three_servers_equal_local(family: str, tmp_path: Path) -> None:
    running = start_swarm(tmp_path, family, ["0:2", "2:4", "4:6"])
    try:
        model = AutoDistributedModelForCausalLM.from_pretrained(running.model_dir, running.peers)
        reference = AutoModelForCausalLM.from_pretrained(running.model_dir, dtype=torch.float32).eval()
        try:
            hidden_size = model.head.info.hidden_size
            config = copy.deepcopy(model.head.config)
            targets = dict(sorted(block_targets(family_class(config)(config)).items())[:2])
            tuning = random_tuning(6, hidden_size, targets, seed=1)
            local_tuning = _clone(tuning)
            ids = torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(2))
            labels = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(3))

            first = model.head.embed(ids).detach().requires_grad_(True)
            logits = model.head.logits(model.layers(first, tuning=tuning))
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
            loss.backward()
            plain = model.head.logits(model.layers(first.detach()))
        finally:
            model.close()
        local_first = first.detach().clone().requires_grad_(True)
        local_loss = _local_loss(reference, ids, labels, local_tuning, local_first)
        local_loss.backward()

        assert not torch.allclose(plain, logits.detach(), atol=1e-3), "the tuning changed nothing"
        torch.testing.assert_close(loss.detach(), local_loss.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(first.grad, local_first.grad, rtol=1e-4, atol=1e-6)
        ours, theirs = tuning.slots(), local_tuning.slots()
        assert len(ours) == 3 + 6 * 2 * 2  # prompts on blocks 0, 2, 4; A and B of 2 targets on 6 blocks
        for (slot, mine), (_, want) in zip(ours, theirs, strict=True):
            assert mine.grad is not None and want.grad is not None, slot
            assert want.grad.abs().sum() > 0, slot
            torch.testing.assert_close(mine.grad, want.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{slot}: {m}")
    finally:
        running.swarm.stop_all()
