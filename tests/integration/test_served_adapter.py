"""Served LoRA adapters: `swarm-node start --adapter NAME=DIR` and `ClientConfig(adapter=NAME)`.

A PEFT adapter made with `peft` itself (random, non-zero factors on q_proj and v_proj of a
tiny Llama) is served by two servers (blocks 0:3 and 3:6); a third server holds all blocks
without it and announces a far higher throughput, so routing would prefer it. A client
asking for the adapter routes only through the two that list it and greedily decodes what
`peft` decodes locally; a client without it gets the base model's tokens (and may use
the third server); asking for an adapter nobody serves is NoRoute, and a call naming it
on a server without it is refused by that server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from client.config import ClientConfig
from client.model import AutoDistributedModelForCausalLM
from swarm.errors import NoRoute, RemoteError
from swarm.protocol import ForwardCall
from swarm.records import BlockRange
from swarm.tuning import Tuning
from tests.integration.conftest import RunningSwarm, start_swarm
from tests.integration.slicing_models import VOCAB, load_reference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, adapter) directories."""
    running_dir = tmp_path_factory.mktemp("served-adapter")
    from tests.integration.slicing_models import save_checkpoint

    checkpoint = save_checkpoint("llama", running_dir / "tiny-llama", layers=6)
    torch.manual_seed(7)
    peft_model = get_peft_model(load_reference(checkpoint),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(running_dir / "adapter")
    return checkpoint, running_dir / "adapter"


@pytest.fixture(scope="module")
def swarm(adapter_dir: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    checkpoint, adapter = adapter_dir
    running = start_swarm(tmp_path_factory.mktemp("served-swarm"), "llama", ["0:3", "3:6"],
                          "--adapter", f"tuned={adapter}")
    running.swarm.start_server("plain", checkpoint, running.peers, "--blocks", "0:6", "--throughput", "10000")
    yield running
    running.swarm.stop_all()


def _generate(swarm: RunningSwarm, adapter: str | None, ids: torch.Tensor) -> tuple[torch.Tensor, str]:
    model = AutoDistributedModelForCausalLM.from_pretrained(
        swarm.model_dir, swarm.peers, config=ClientConfig(initial_peers=(), adapter=adapter))
    try:
        with model.inference_session(max_length=24, batch_size=ids.shape[0]) as session:
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
            return out, session.route
    finally:
        model.close()


def test_a_served_adapter_decodes_what_peft_decodes(swarm: RunningSwarm, adapter_dir: tuple[Path, Path]) -> None:
    from peft import PeftModel

    checkpoint, adapter = adapter_dir
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(8))
    base = load_reference(checkpoint)
    kwargs = {"attention_mask": torch.ones_like(ids), "max_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    plain = base.generate(ids, **kwargs)
    expected = PeftModel.from_pretrained(base, str(adapter)).eval().generate(input_ids=ids, **kwargs)
    assert not torch.equal(plain, expected)

    tuned, route = _generate(swarm, "tuned", ids)
    assert torch.equal(tuned, expected)
    plain_address = swarm.swarm.servers[-1].address
    assert plain_address not in route and len(route.split(" -> ")) == 2, route
    untuned, _ = _generate(swarm, None, ids)
    assert torch.equal(untuned, plain)


def test_an_adapter_nobody_serves(swarm: RunningSwarm) -> None:
    ids = torch.randint(1, VOCAB, (1, 4), generator=torch.Generator().manual_seed(9))
    with pytest.raises(NoRoute):
        _generate(swarm, "missing", ids)
    model = AutoDistributedModelForCausalLM.from_pretrained(swarm.model_dir, swarm.peers)
    try:
        plain_address = swarm.swarm.servers[-1].address
        call = ForwardCall(model.model_name, BlockRange(0, 6), (torch.zeros(1, 3, 32),), Tuning(adapter="tuned"))
        with pytest.raises(RemoteError, match="adapter 'tuned' is not served here"):
            model.loop.run(model.layers.transport.forward(plain_address, call, 10.0))
    finally:
        model.close()
