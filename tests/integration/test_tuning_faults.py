"""Fine-tuning against faults, with real `swarm-node` processes.

- Bad tuning tensors (unknown projection, wrong shapes, rank too high, NaN, a block
  outside the call, a prompt of the wrong width, a LoRA pair missing its B, slots out of
  order) get INVALID_ARGUMENT saying what was wrong, in Forward, Backward and at a
  session's open; the server keeps serving: a tuned pass afterwards is still right.
- A Backward refers to its Forward's tensors by digest (not uploaded twice); an unknown
  digest is FAILED_PRECONDITION, a digest that does not match its tensors INVALID_ARGUMENT.
- A server killed (SIGKILL) between a training pass's forward and its backward: the
  backward goes to a replica of its blocks, and the gradients equal local autograd.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM

from client.grpc_transport import GrpcInferenceStream, GrpcTransport
from client.model import AutoDistributedModelForCausalLM
from client.tuning import block_targets
from swarm.codec import messages
from swarm.codec.tensors import DEFAULT_LIMITS, tensor_header
from swarm.errors import PeerRefused, RemoteInvalidInput
from swarm.model.families import family_class
from swarm.protocol import ForwardCall, InferenceOpen
from swarm.records import BlockRange
from swarm.rpc import ChannelPool
from swarm.tuning import Tuning, content_digest
from swarm.v1 import block_service_pb2 as pb
from tests.integration.conftest import RunningSwarm, start_swarm
from tests.integration.slicing_models import VOCAB
from tests.tuning_reference import decoder_layers, random_tuning, tuned

pytestmark = pytest.mark.slow

HIDDEN = 32
Q = "self_attn.q_proj"  # [32, 32] in the tiny Llama
V = "self_attn.v_proj"  # [16, 32]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    running = start_swarm(tmp_path_factory.mktemp("tuning-faults"), "llama", ["0:3", "3:6"])
    yield running
    running.swarm.stop_all()


def _hidden(batch: int = 1, tokens: int = 5) -> torch.Tensor:
    return torch.randn(batch, tokens, HIDDEN, generator=torch.Generator().manual_seed(0))


def _lora(rank: int = 2, out: int = 32, inp: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rank, inp) * 0.1, torch.randn(out, rank) * 0.1


BAD = [
    ("unknown projection", Tuning(lora={(0, "self_attn.nope"): _lora()}), "has no projection"),
    ("A of the wrong width", Tuning(lora={(0, Q): _lora(inp=31)}), "must be A"),
    ("B of the wrong height", Tuning(lora={(0, V): _lora(out=32)}), "must be A"),
    ("rank over the limit", Tuning(lora={(0, Q): _lora(rank=300)}), "0 < r <= 256"),
    ("NaN in a factor", Tuning(lora={(0, Q): (torch.full((2, 32), float("nan")), torch.zeros(32, 2))}),
     "NaN or Inf"),
    ("a block outside the call", Tuning(prompts={5: torch.zeros(1, 2, HIDDEN)}), "covers blocks 0:3"),
    ("a prompt of the wrong width", Tuning(prompts={1: torch.zeros(1, 2, HIDDEN + 1)}), "deep prompt of block 1"),
    ("a prompt for another batch size", Tuning(prompts={1: torch.zeros(3, 2, HIDDEN)}), "deep prompt of block 1"),
    ("an infinite scale", Tuning(lora={(0, Q): _lora()}, lora_scale=float("inf")), "finite"),
]


@pytest.mark.parametrize("tuning, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_bad_tuning_is_invalid_argument(swarm: RunningSwarm, pool: ChannelPool, tuning: Tuning,
                                              words: str) -> None:
    address = swarm.servers[0].address
    transport = GrpcTransport(DEFAULT_LIMITS, pool)
    hidden = _hidden()
    call = ForwardCall("tiny-llama", BlockRange(0, 3), (hidden,), tuning)
    for attempt in (transport.forward(address, call, 10.0),
                    transport.backward(address, ForwardCall(call.model, call.blocks, (hidden, hidden), tuning), 10.0)):
        with pytest.raises(RemoteInvalidInput, match=words) as raised:
            await attempt
        assert raised.value.code == "INVALID_ARGUMENT"
    opening = InferenceOpen("tiny-llama", BlockRange(0, 3), 1, 16, torch.float32, "0" * 32, "", tuning)
    with pytest.raises(RemoteInvalidInput, match=words):
        await GrpcInferenceStream.open(pool, address, opening, 10.0, DEFAULT_LIMITS)
    # and the server serves on: a good tuned call still answers
    good = Tuning(lora={(0, Q): _lora()})
    out = await transport.forward(address, ForwardCall(call.model, call.blocks, (hidden,), good), 10.0)
    assert out.shape == hidden.shape


async def test_malformed_tuning_headers_are_invalid_argument(swarm: RunningSwarm, pool: ChannelPool) -> None:
    """Structure the codec refuses: slots out of order, a LoRA A without its B, tensors != slots."""
    address = swarm.servers[0].address
    hidden = _hidden()
    a, b = _lora()
    slot_a = pb.TuningSlot(block=0, kind=2, target=Q)
    slot_b = pb.TuningSlot(block=0, kind=3, target=Q)
    cases = [
        ([slot_b, slot_a], [b, a], "sorted"),
        ([slot_a], [a], "need both A and B"),
        ([slot_a, slot_b], [a], "2 tuning slots but 1 tensors"),
        ([pb.TuningSlot(block=0, kind=9)], [a], "kind must be"),
    ]
    stub = pool.stub(address)
    for slots, tensors, words in cases:
        header = pb.ForwardOpen(model="tiny-llama", blocks=messages.blocks_to_wire(BlockRange(0, 3)),
                                tensors=[tensor_header(hidden)],
                                tuning=pb.TuningHeader(slots=slots, tensors=[tensor_header(t) for t in tensors],
                                                       lora_scale=1.0))
        requests = [pb.ForwardRequest(open=header)]
        requests += [pb.ForwardRequest(chunk=t.numpy().tobytes()) for t in (hidden, *tensors)]
        call = stub.Forward(iter(requests), timeout=10.0)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (words, raised.value.details())
        assert words in (raised.value.details() or ""), raised.value.details()


def test_a_server_killed_between_forward_and_backward(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # two replicas of 0:3; whichever the forward went through is killed before the backward
    running = start_swarm(tmp_path, "llama", ["3:6"])
    swarm = running.swarm
    try:
        replicas = [swarm.start_server(name, running.model_dir, running.peers, "--blocks", "0:3")
                    for name in ("first", "second")]
        model = AutoDistributedModelForCausalLM.from_pretrained(running.model_dir, running.peers)
        used: list[str] = []
        sent = model.layers.transport.forward

        async def recording(address: str, call: ForwardCall, timeout: float) -> torch.Tensor:
            used.append(address)
            return await sent(address, call, timeout)

        model.layers.transport.forward = recording  # type: ignore[method-assign]
        reference = AutoModelForCausalLM.from_pretrained(running.model_dir, dtype=torch.float32).eval()
        try:
            config = copy.deepcopy(model.head.config)
            targets = dict(sorted(block_targets(family_class(config)(config)).items())[:1])
            tuning = random_tuning(6, HIDDEN, targets, seed=3)
            ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(4))
            first = model.head.embed(ids).detach().requires_grad_(True)
            loss = F.cross_entropy(model.head.logits(model.layers(first, tuning=tuning)).flatten(0, 1), ids.flatten())
            victim = next(server for server in replicas if server.address in used)
            victim.popen.send_signal(signal.SIGKILL)
            victim.popen.wait(10)
            with caplog.at_level(logging.WARNING, logger="client.remote_sequential"):
                loss.backward()
            # the killed server was on the pass's route: its backward was re-routed
            assert any("re-routing" in r.getMessage() and victim.info is not None
                       and r.getMessage().startswith(f"server {victim.info.server_id[:8]}") for r in caplog.records), \
                [r.getMessage() for r in caplog.records]
        finally:
            model.close()
        local = Tuning.from_slots([s for s, _ in tuning.slots()],
                                  [t.detach().clone().requires_grad_(True) for t in tuning.tensors()], tuning.lora_scale)
        local_first = first.detach().clone().requires_grad_(True)
        handle = decoder_layers(reference)[0].register_forward_pre_hook(
            lambda module, args, kwargs: ((local_first, *args[1:]), kwargs) if args
            else (args, {**kwargs, "hidden_states": local_first}), with_kwargs=True)
        with tuned(reference, local):
            local_loss = F.cross_entropy(reference(ids).logits.flatten(0, 1), ids.flatten())
        handle.remove()
        local_loss.backward()
        torch.testing.assert_close(first.grad, local_first.grad, rtol=1e-4, atol=1e-6)
        for mine, want in zip(tuning.tensors(), local.tensors(), strict=True):
            torch.testing.assert_close(mine.grad, want.grad, rtol=1e-4, atol=1e-6)
    finally:
        swarm.stop_all()


async def test_a_backward_refers_to_its_forwards_tensors_by_digest(swarm: RunningSwarm, pool: ChannelPool) -> None:
    """The pass uploads its factors once: the Backward names their digest; an unknown digest
    is FAILED_PRECONDITION (send them), a digest that does not match the tensors is refused."""
    address = swarm.servers[0].address
    transport = GrpcTransport(DEFAULT_LIMITS, pool)
    hidden, grad_out = _hidden(), _hidden(tokens=5) * 0.5
    a, b = _lora()
    tuning = Tuning(lora={(0, Q): (a, b)}, prompts={1: torch.randn(1, 2, HIDDEN) * 0.1}, lora_scale=2.0)
    digested = replace(tuning, digest=content_digest(tuning))
    blocks = BlockRange(0, 3)
    with pytest.raises(PeerRefused, match="digest unknown") as raised:  # never sent
        await transport.backward(address, ForwardCall("tiny-llama", blocks, (hidden, grad_out), digested,
                                                      tuning_by_reference=True), 10.0)
    assert raised.value.code == "FAILED_PRECONDITION"
    lying = replace(tuning, digest=bytes(32))
    with pytest.raises(RemoteInvalidInput, match="does not match its tensors"):
        await transport.forward(address, ForwardCall("tiny-llama", blocks, (hidden,), lying), 10.0)
    await transport.forward(address, ForwardCall("tiny-llama", blocks, (hidden,), digested), 10.0)
    by_reference = await transport.backward(address, ForwardCall("tiny-llama", blocks, (hidden, grad_out), digested,
                                                                 tuning_by_reference=True), 10.0)
    in_full = await transport.backward(address, ForwardCall("tiny-llama", blocks, (hidden, grad_out), tuning), 10.0)
    torch.testing.assert_close(by_reference[0], in_full[0])
    for mine, want in zip(by_reference[1], in_full[1], strict=True):
        torch.testing.assert_close(mine, want)
