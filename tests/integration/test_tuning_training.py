"""Training through the swarm is training: 20 optimizer steps equal the same steps run locally.

Three real servers of a tiny Llama (blocks 0:2, 2:4, 4:6). For deep prompt tuning and for
LoRA, the client's `TrainableTuning` takes 20 AdamW steps on a fixed batch through the
swarm, and an identically initialised copy takes the same steps on a local transformers
model with the tensors applied by hooks (`tests.tuning_reference`): every step's loss
agrees within 1e-4 and the loss falls. The trained LoRA, saved in PEFT's format and
loaded with `peft` onto the local checkpoint, then decodes the same greedy tokens as a
swarm session that carries the factors.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, PreTrainedModel

from client.model import AutoDistributedModelForCausalLM, DistributedModelForCausalLM
from client.tuning import TrainableTuning, shifted_lm_loss, tuned_logits
from swarm.model.families import family_class
from tests.integration.conftest import RunningSwarm, start_swarm
from tests.integration.slicing_models import VOCAB
from tests.tuning_reference import tuned

pytestmark = pytest.mark.slow

STEPS = 20


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    running = start_swarm(tmp_path_factory.mktemp("tuning"), "llama", ["0:2", "2:4", "4:6"])
    yield running
    running.swarm.stop_all()


@pytest.fixture(scope="module")
def model(swarm: RunningSwarm) -> Iterator[DistributedModelForCausalLM]:
    client = AutoDistributedModelForCausalLM.from_pretrained(swarm.model_dir, swarm.peers)
    yield client
    client.close()


def _tuning(model: DistributedModelForCausalLM, mode: str) -> TrainableTuning:
    config = copy.deepcopy(model.head.config)
    torch.manual_seed(0)
    return TrainableTuning(model.head.info, family_class(config)(config), mode,  # type: ignore[arg-type]
                           pre_seq_len=4, lora_rank=4, lora_alpha=8, lora_targets=("q_proj", "v_proj"))


def _local_loss(reference: PreTrainedModel, params: TrainableTuning, ids: torch.Tensor) -> torch.Tensor:
    embeds = reference.get_input_embeddings()(ids)
    embeds, _ = params.prepend(embeds, None)
    tuning = params.tuning()
    if tuning is None:
        logits = reference(inputs_embeds=embeds).logits
    else:
        with tuned(reference, tuning):
            logits = reference(inputs_embeds=embeds).logits
    return shifted_lm_loss(logits[:, params.pre_seq_len:], ids)


@pytest.mark.parametrize("mode", ["deep_ptune", "lora"])
def test_twenty_steps_equal_local_steps(model: DistributedModelForCausalLM, swarm: RunningSwarm, mode: str) -> None:
    reference = AutoModelForCausalLM.from_pretrained(swarm.model_dir, dtype=torch.float32).eval()
    reference.requires_grad_(False)
    remote, local = _tuning(model, mode), _tuning(model, mode)
    for mine, theirs in zip(remote.parameters(), local.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    ids = torch.randint(1, VOCAB, (4, 10), generator=torch.Generator().manual_seed(5))
    optimizers = [torch.optim.AdamW(p.parameters(), lr=0.05) for p in (remote, local)]
    losses: list[tuple[float, float]] = []
    for _ in range(STEPS):
        for optimizer in optimizers:
            optimizer.zero_grad()
        remote_loss = shifted_lm_loss(tuned_logits(model.head, model.layers, remote, ids), ids)
        local_loss = _local_loss(reference, local, ids)
        remote_loss.backward()
        local_loss.backward()
        torch.nn.utils.clip_grad_norm_(remote.parameters(), 1.0)
        torch.nn.utils.clip_grad_norm_(local.parameters(), 1.0)
        for optimizer in optimizers:
            optimizer.step()
        losses.append((remote_loss.item(), local_loss.item()))
    for step, (mine, theirs) in enumerate(losses):
        assert abs(mine - theirs) <= 1e-4, f"step {step}: swarm {mine:.6f}, local {theirs:.6f}"
    assert losses[-1][0] < losses[0][0] - 0.1, losses


def _greedy_through_session(model: DistributedModelForCausalLM, params: TrainableTuning, ids: torch.Tensor,
                            new_tokens: int) -> torch.Tensor:
    """Greedy decoding in one swarm session that carries the factors (opened with them)."""
    with model.layers.inference_session(max_length=ids.shape[1] + new_tokens, batch_size=ids.shape[0],
                                        tuning=params.tuning()) as session:
        hidden = session.step(model.head.embed(ids))
        out = ids
        for _ in range(new_tokens):
            token = model.head.logits(hidden[:, -1:]).argmax(-1)
            out = torch.cat([out, token], dim=1)
            hidden = session.step(model.head.embed(token))
    return out


def test_a_trained_lora_loads_in_peft_and_decodes_the_same(model: DistributedModelForCausalLM, swarm: RunningSwarm,
                                                         tmp_path: Path) -> None:
    params = _tuning(model, "lora")
    optimizer = torch.optim.AdamW(params.parameters(), lr=0.05)
    ids = torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(6))
    for _ in range(5):  # B leaves zero: the adapter now changes the model
        optimizer.zero_grad()
        shifted_lm_loss(tuned_logits(model.head, model.layers, params, ids), ids).backward()
        optimizer.step()
    adapter = params.save_adapter(tmp_path / "adapter", base_model=str(swarm.model_dir))
    base = AutoModelForCausalLM.from_pretrained(swarm.model_dir, dtype=torch.float32).eval()
    mask = torch.ones_like(ids)
    plain = base.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    local = PeftModel.from_pretrained(base, str(adapter)).eval()
    expected = local.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert not torch.equal(expected, plain), "the trained adapter should change greedy decoding"
    with torch.no_grad():
        assert torch.equal(_greedy_through_session(model, params, ids, 8), expected)


def test_the_model_api_trains_lora_and_generates_with_it(swarm: RunningSwarm, tmp_path: Path) -> None:
    """from_pretrained(tuning_mode="lora"): the trainable parameters are the factors only,
    model(ids, labels=ids).loss trains them, generate carries them, save_adapter writes them."""
    tuned_model = AutoDistributedModelForCausalLM.from_pretrained(
        swarm.model_dir, swarm.peers, tuning_mode="lora", lora_rank=4, lora_alpha=8, lora_targets=("q_proj",))
    try:
        assert tuned_model.tuning is not None
        trainable = [p for p in tuned_model.parameters() if p.requires_grad]
        assert {id(p) for p in trainable} == {id(p) for p in tuned_model.tuning.parameters()}
        assert len(trainable) == 2 * 6  # A and B of q_proj in each of 6 blocks
        ids = torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(10))
        optimizer = torch.optim.AdamW(trainable, lr=0.05)
        losses = []
        for _ in range(6):
            optimizer.zero_grad()
            loss = tuned_model(ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], losses
        out = tuned_model.generate(ids[:1], attention_mask=torch.ones_like(ids[:1]), max_new_tokens=6, do_sample=False)
        with torch.no_grad():
            assert torch.equal(out, _greedy_through_session(tuned_model, tuned_model.tuning, ids[:1], 6))
        adapter = tuned_model.save_adapter(tmp_path / "lora")
        assert (adapter / "adapter_model.safetensors").is_file()
    finally:
        tuned_model.close()


def _local_prefixed_greedy(reference: PreTrainedModel, params: TrainableTuning, ids: torch.Tensor,
                           new_tokens: int) -> torch.Tensor:
    """Greedy decoding of one unpadded row, recomputed in full each token: prefix + tokens."""
    out = ids
    for _ in range(new_tokens):
        embeds, _ = params.prepend(reference.get_input_embeddings()(out), None)
        tuning = params.tuning()
        with tuned(reference, tuning) if tuning is not None else contextlib.nullcontext():
            logits = reference(inputs_embeds=embeds).logits
        out = torch.cat([out, logits[:, -1:].argmax(-1)], dim=1)
    return out


@pytest.mark.parametrize("mode", ["ptune", "deep_ptune"])
def test_generate_with_a_trainable_prefix_equals_local_greedy(swarm: RunningSwarm, mode: str) -> None:
    """A prompt-tuned model's generate: the prefix first in the session, positions after it;
    a left-padded batch decodes each row as the local model decodes it alone."""
    prefixed = AutoDistributedModelForCausalLM.from_pretrained(swarm.model_dir, swarm.peers, tuning_mode=mode,
                                                               pre_seq_len=3)
    reference = AutoModelForCausalLM.from_pretrained(swarm.model_dir, dtype=torch.float32).eval()
    try:
        params = prefixed.tuning
        assert params is not None and params.prompt is not None
        torch.manual_seed(5)
        with torch.no_grad():  # trained-looking values: the prefix must change the answer
            for tensor in params.parameters():
                tensor.normal_(0.0, 1.0)
        ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(11))
        ids[1, :2] = 0
        mask = torch.ones_like(ids)
        mask[1, :2] = 0
        with torch.no_grad():
            out = prefixed.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
            plain = reference.generate(ids[:1], attention_mask=mask[:1], max_new_tokens=5, do_sample=False,
                                       pad_token_id=0)
            for row, start in ((0, 0), (1, 2)):
                want = _local_prefixed_greedy(reference, params, ids[row:row + 1, start:], 5)
                assert torch.equal(out[row:row + 1, start:], want), (row, out, want)
            assert not torch.equal(out[:1], plain), "the prefix should change greedy decoding"
            with prefixed.inference_session(max_length=20) as session:  # generate calls continue a session
                first = prefixed.generate(ids[:1, :4], max_new_tokens=2, do_sample=False)
                second = prefixed.generate(ids[:1, 4:], max_new_tokens=3, do_sample=False)
                assert session.position == 3 + 4 + 2 + 2 + 2  # the prefix, then what transformers counts
            want = _local_prefixed_greedy(reference, params, torch.cat([first, ids[:1, 4:]], dim=1), 3)
            assert torch.equal(second, want[:, first.shape[1]:])
        assert prefixed(ids, labels=ids).logits.shape == (2, 6, VOCAB)  # the prefix's positions are dropped
    finally:
        prefixed.close()
