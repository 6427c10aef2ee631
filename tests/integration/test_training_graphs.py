"""A training pass's graph, kept by the server from its Forward to its Backward.

In process (real blocks of every family, `BlockBackend` + `GraphCache`): a Backward that
uses the kept graph, all of it or only the leading pieces a small budget kept, gives the
gradients of a Backward that recomputes the forward; a kept graph whose inputs differ
from the Backward's is not used. Against a real `swarm-node`: a pass id that is not 32
hex digits is INVALID_ARGUMENT; a Backward whose hidden states differ from its Forward's
(same pass id) gets the gradients of its own inputs, and the server counts it recomputed.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from client.grpc_transport import GrpcTransport
from client.tuning import block_targets
from node.backend import BlockBackend
from node.graph_cache import GraphCache
from swarm.codec.tensors import DEFAULT_LIMITS
from swarm.errors import RemoteInvalidInput
from swarm.model.families import family_class, load_block_stack
from swarm.protocol import ForwardCall
from swarm.records import BlockRange
from swarm.rpc import ChannelPool
from swarm.tuning import Tuning, content_digest
from tests.integration.conftest import RunningSwarm
from tests.integration.slicing_models import FAMILY_NAMES, HIDDEN, make_config, save_checkpoint
from tests.tuning_reference import random_tuning

BLOCKS = BlockRange(0, 4)


def _tuning(family: str) -> Tuning:
    config = make_config(family, layers=BLOCKS.end)
    targets = dict(sorted(block_targets(family_class(config)(copy.deepcopy(config))).items())[:1])
    tuning = random_tuning(BLOCKS.end, HIDDEN, targets, seed=5)
    return Tuning.from_slots([s for s, _ in tuning.slots()], [t.detach() for t in tuning.tensors()],
                             tuning.lora_scale)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_kept_graphs_give_the_recomputed_gradients(family: str, tmp_path: Path) -> None:
    stack = load_block_stack(save_checkpoint(family, tmp_path / family, layers=BLOCKS.end), BLOCKS, "float32")
    backend = BlockBackend(stack)
    tuning = _tuning(family)
    tuning = replace(tuning, digest=content_digest(tuning))  # (what a kept pass's tuning is known by)
    generator = torch.Generator().manual_seed(0)
    hidden, grad_out = torch.randn(2, 5, HIDDEN, generator=generator), torch.randn(2, 5, HIDDEN, generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])

    async def run() -> None:
        want_grad, want_tuning = await backend.backward(BLOCKS, hidden, grad_out, mask, tuning=tuning)
        out_plain = await backend.forward(BLOCKS, hidden, mask, tuning=tuning)
        # each budget: everything kept, only the leading pieces, nothing
        _, probe = await backend.forward_keeping(BLOCKS, hidden, mask, tuning=tuning)
        assert len(probe.pieces) == 4 and all(piece.nbytes > 0 for piece in probe.pieces)
        for budget, pieces in ((probe.nbytes, 4), (probe.nbytes - probe.pieces[-1].nbytes, 3), (1, 0)):
            cache = GraphCache(budget)
            out, kept = await backend.forward_keeping(BLOCKS, hidden, mask, tuning=tuning)
            torch.testing.assert_close(out, out_plain, rtol=0, atol=1e-6)
            assert cache.put("peer", "a" * 32, kept, 0.0) == pieces
            taken = cache.take("peer", "a" * 32, 1.0)
            assert (taken is None) == (pieces == 0) and cache.used == 0
            grad, grads = await backend.backward(BLOCKS, hidden, grad_out, mask, tuning=tuning, kept=taken)
            torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-6)
            for mine, want in zip(grads, want_tuning, strict=True):
                torch.testing.assert_close(mine, want, rtol=1e-5, atol=1e-6)
        # a kept graph of other inputs is not used: the gradients are those of the Backward's own
        _, other = await backend.forward_keeping(BLOCKS, hidden + 1, mask, tuning=tuning)
        assert not other.matches(stack, BLOCKS, hidden, mask, tuning)
        grad, _ = await backend.backward(BLOCKS, hidden, grad_out, mask, tuning=tuning, kept=other)
        torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-6)

    try:
        asyncio.run(run())
    finally:
        backend.close()


@pytest.fixture()
def transport(pool: ChannelPool) -> GrpcTransport:
    return GrpcTransport(DEFAULT_LIMITS, pool)


def _graph_counts(server_text: str) -> dict[str, float]:
    from tests.integration.test_server_metrics import _metrics_url

    text = urllib.request.urlopen(f"{_metrics_url(server_text)}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {s.labels["outcome"]: s.value for s in families["swarm_training_graphs"].samples
            if s.name == "swarm_training_graphs_total"}


@pytest.mark.slow
async def test_pass_ids_against_a_real_server(llama_swarm: RunningSwarm, transport: GrpcTransport) -> None:
    server = llama_swarm.servers[0]
    blocks = BlockRange(0, 2)
    generator = torch.Generator().manual_seed(1)
    hidden, grad_out = torch.randn(1, 4, HIDDEN, generator=generator), torch.randn(1, 4, HIDDEN, generator=generator)
    for bad in ("xyz", "A" * 32, "0" * 31):
        with pytest.raises(RemoteInvalidInput, match="pass_id must be empty or 32 lowercase hex digits"):
            await transport.forward(server.address, ForwardCall("tiny-llama", blocks, (hidden,), pass_id=bad), 10.0)
        with pytest.raises(RemoteInvalidInput, match="pass_id must be empty"):
            await transport.backward(server.address, ForwardCall("tiny-llama", blocks, (hidden, grad_out),
                                                                 pass_id=bad), 10.0)
    before = _graph_counts(server.text())
    want = (await transport.backward(server.address, ForwardCall("tiny-llama", blocks, (hidden, grad_out)), 10.0))[0]
    pass_id = secrets.token_hex(16)
    await transport.forward(server.address, ForwardCall("tiny-llama", blocks, (hidden * 2,), pass_id=pass_id), 10.0)
    got = (await transport.backward(server.address, ForwardCall("tiny-llama", blocks, (hidden, grad_out),
                                                                pass_id=pass_id), 10.0))[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # the Backward's inputs, not the Forward's
    after = _graph_counts(server.text())
    assert after.get("kept", 0) == before.get("kept", 0) + 1
    assert after.get("recomputed", 0) == before.get("recomputed", 0) + 2  # (the one without a pass id too)
    assert after.get("reused", 0) == before.get("reused", 0)
