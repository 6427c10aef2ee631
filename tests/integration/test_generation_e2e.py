"""Generation through real server processes equals local transformers, token for token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.masking_utils import create_causal_mask

from client.model import AutoDistributedModelForCausalLM, DistributedModelForCausalLM
from swarm.addresses import PeerAddress
from swarm.dht import SwarmDHT
from swarm.records import ServerRecord
from tests.integration.conftest import RunningSwarm
from tests.integration.slicing_models import VOCAB
from tests.wait import wait_for_value


@pytest.fixture(scope="module")
def client(llama_swarm: RunningSwarm) -> Iterator[DistributedModelForCausalLM]:
    model = AutoDistributedModelForCausalLM.from_pretrained(llama_swarm.model_dir, llama_swarm.peers)
    yield model
    model.close()


@pytest.fixture(scope="module")
def reference(llama_swarm: RunningSwarm) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(llama_swarm.model_dir, dtype=torch.float32).eval()


def _prompt(batch: int = 1, length: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_greedy_equals_local(client: DistributedModelForCausalLM, reference: PreTrainedModel) -> None:
    ids = _prompt()
    expected = reference.generate(ids, max_new_tokens=24, do_sample=False)
    assert torch.equal(client.generate(ids, max_new_tokens=24, do_sample=False), expected)


def test_left_padded_batch_equals_local(client: DistributedModelForCausalLM, reference: PreTrainedModel) -> None:
    ids = _prompt(batch=3, length=7, seed=1)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :5] = 0
    ids = ids * mask
    kwargs = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    expected = reference.generate(ids, attention_mask=mask, **kwargs)
    assert torch.equal(client.generate(ids, attention_mask=mask, **kwargs), expected)


def test_sampling_and_penalty_follow_transformers(client: DistributedModelForCausalLM,
                                                  reference: PreTrainedModel) -> None:
    ids = _prompt(seed=2)
    kwargs = {"max_new_tokens": 12, "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9,
              "repetition_penalty": 1.3}
    torch.manual_seed(123)
    expected = reference.generate(ids, **kwargs)
    torch.manual_seed(123)
    assert torch.equal(client.generate(ids, **kwargs), expected)


def test_session_continues_across_generate_calls(client: DistributedModelForCausalLM,
                                                 reference: PreTrainedModel) -> None:
    first, second = _prompt(seed=3), _prompt(length=3, seed=4)
    with client.inference_session(max_length=40) as session:
        out1 = client.generate(first, max_new_tokens=5, do_sample=False)
        out2 = client.generate(second, max_new_tokens=5, do_sample=False)
        assert session.position == first.shape[1] + 5 + second.shape[1] + 4
    whole = torch.cat([out1, second], dim=1)
    expected = reference.generate(whole, max_new_tokens=5, do_sample=False)
    assert torch.equal(out2, expected[:, out1.shape[1]:])


def test_stop_strings_and_eos_stop_early(client: DistributedModelForCausalLM, reference: PreTrainedModel) -> None:
    ids = _prompt(seed=5)
    greedy = reference.generate(ids, max_new_tokens=12, do_sample=False)
    eos = int(greedy[0, ids.shape[1] + 3])  # pretend the 4th new token is the end of sequence
    out = client.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos)
    first_eos = (greedy[0, ids.shape[1]:] == eos).nonzero()[0].item()
    assert torch.equal(out, greedy[:, : ids.shape[1] + first_eos + 1])


def test_bench_decodings_in_lockstep_equal_local_greedy(client: DistributedModelForCausalLM,
                                                        llama_swarm: RunningSwarm) -> None:
    """What `scripts/bench local` times: the swarm's decoding, a step at a time between the
    local reference's, keeps its session and gives the local greedy tokens."""
    from devtools.bench.workloads import LocalReference, SwarmContender, lockstep

    ids = _prompt(seed=3)
    runs = lockstep({"swarm": SwarmContender(client).decoding(ids, 10),
                     "local": LocalReference(str(llama_swarm.model_dir)).decoding(ids, 10)})
    assert runs["swarm"].tokens == runs["local"].tokens and len(runs["swarm"].tokens) == 11
    assert len(runs["swarm"].step_seconds) == 10 and min(runs["swarm"].step_seconds) > 0


def test_hidden_states_through_layer_slices_match(client: DistributedModelForCausalLM,
                                                  reference: PreTrainedModel) -> None:
    ids = _prompt(batch=2, length=9, seed=6)
    with torch.no_grad():
        expected = reference.model(ids, output_hidden_states=True).hidden_states
    hidden = client.head.embed(ids)
    for k in (1, 3, 5):
        after = client.layers[0:k](hidden)
        assert torch.allclose(after, expected[k], atol=1e-4), k
    # read and change hidden states between blocks: the rest of the model takes them as they are
    middle = client.layers[0:3](hidden) * 1.5
    assert torch.allclose(client.layers[3:6](middle), client.layers[3:](middle), atol=1e-6)


def test_step_session_on_hidden_states(client: DistributedModelForCausalLM, reference: PreTrainedModel) -> None:
    ids = _prompt(length=8, seed=7)
    with torch.no_grad():
        expected = reference.model(ids, output_hidden_states=True).hidden_states[4]
    hidden = client.head.embed(ids)
    with client.layers[0:4].inference_session(max_length=16) as session:
        prefix = session.step(hidden[:, :5])
        rest = [session.step(hidden[:, i : i + 1]) for i in range(5, 8)]
        # rewinding re-computes the same positions
        again = session.step(hidden[:, 6:8], start_position=6)
    got = torch.cat([prefix, *rest], dim=1)
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(again, expected[:, 6:8], atol=1e-4)


def test_gradients_flow_through_remote_blocks(client: DistributedModelForCausalLM,
                                              reference: PreTrainedModel) -> None:
    ids = _prompt(length=5, seed=8)
    hidden = client.head.embed(ids).detach().requires_grad_(True)
    client.layers(hidden).pow(2).sum().backward()
    # the local reference: the same blocks run by hand (the model's last hidden state is
    # after the final norm, which the remote blocks do not include)
    local_in = reference.model.embed_tokens(ids).detach().requires_grad_(True)
    x = local_in
    positions = torch.arange(ids.shape[1])[None]
    rotary = reference.model.rotary_emb(x, positions)
    mask = create_causal_mask(config=reference.config, inputs_embeds=x,
                              attention_mask=torch.ones_like(ids), past_key_values=None,
                              position_ids=positions)
    for layer in reference.model.layers:
        x = layer(x, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
    x.pow(2).sum().backward()
    assert hidden.grad is not None and local_in.grad is not None
    assert hidden.grad.abs().sum() > 0
    assert torch.allclose(hidden.grad, local_in.grad, atol=1e-3, rtol=1e-3)


async def _published_records(peer: str) -> dict[int, ServerRecord]:
    """The full records of the swarm's tiny-llama servers, by first block."""
    dht = await SwarmDHT.start("127.0.0.1", 0, [PeerAddress.parse(peer)])
    try:
        swarm_map = await dht.get_swarm_map("tiny-llama", 6)
        records = [await dht.get_record(s.server_id) for s in swarm_map.servers]
    finally:
        await dht.stop()
    return {r.blocks.start: r for r in records if r is not None}


def test_servers_publish_next_hop_latencies(llama_swarm: RunningSwarm) -> None:
    def published() -> dict[int, ServerRecord] | None:
        by_start = asyncio.run(_published_records(llama_swarm.peers[0]))
        measured = len(by_start) == 3 and by_start[0].next_hop_rtt_ms and by_start[2].next_hop_rtt_ms
        return by_start if measured else None

    by_start = wait_for_value(published, 20, "all three servers publish their next-hop latencies", interval=0.5)
    # each server measured the server of the blocks right after its own, and only that one
    assert set(by_start[0].next_hop_rtt_ms) == {by_start[2].server_id}
    assert set(by_start[2].next_hop_rtt_ms) == {by_start[4].server_id}
    assert by_start[4].next_hop_rtt_ms == {}
    assert all(0 < ms < 1000 for ms in by_start[0].next_hop_rtt_ms.values())
    # and timed a payload to it: the network figure (tokens/s of hidden states) is set
    assert by_start[0].throughput.network_tokens_per_s > 0
    assert by_start[4].throughput.network_tokens_per_s == 0  # no next server to measure
