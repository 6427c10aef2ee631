"""Attacks on the client (issue 10, items 2 and 5): Sybil records at a silent address, and
lying servers, against real `swarm-node` processes on 127.0.0.1.

- 20 validly signed records, all for one address that passes health checks but never
  answers a session, announce the whole model (the most attractive route): generation
  still succeeds within 5 s (one short open timeout, then the address and its 20 ids are
  banned together) and equals local greedy. With the old 10 s open timeout it takes longer.
- A lying server (noise, zeros, NaN, passthrough: `devtools.liar`) next to two honest
  replicas of the same blocks, with verify_fraction=1.0: the liar is caught and banned,
  and the output equals local greedy. (The NaN liar also skips the node's own output
  check, so that the NaN reaches the client.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from transformers import AutoModelForCausalLM, PreTrainedModel

from client.config import ClientConfig
from client.model import AutoDistributedModelForCausalLM, DistributedModelForCausalLM
from devtools.liar import spawn_liar
from swarm.addresses import PeerAddress
from swarm.dht import SwarmDHT
from swarm.identity import Identity
from swarm.records import BlockRange
from tests.integration.conftest import RunningSwarm, start_swarm
from tests.integration.slicing_models import VOCAB

SYBILS = 20
NEW_TOKENS = 6
SERVER_FLAGS = ("--cache-tokens", "4096", "--update-period", "2", "--metrics-port", "0")


def _prompt() -> torch.Tensor:
    return torch.randint(1, VOCAB, (1, 5), generator=torch.Generator().manual_seed(7))


class SilentServer:
    """A gRPC server at 127.0.0.1 that answers health checks but never a BlockService call."""

    def __init__(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self.server)
        self.calls = 0

        def hang(request: Any, context: grpc.ServicerContext) -> Any:
            self.calls += 1
            deadline = time.monotonic() + 30.0  # bounded: the client gives up long before
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.05)
            context.abort(grpc.StatusCode.UNAVAILABLE, "silent")

        handlers = {name: grpc.stream_stream_rpc_method_handler(hang)
                    for name in ("Inference", "Forward", "Backward", "PushStream")}
        handlers.update({name: grpc.unary_unary_rpc_method_handler(hang) for name in ("Info", "Probe", "Push")})
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("swarm.v1.BlockService",
                                                                                   handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0)


async def _announce_sybils(running: RunningSwarm, address: str, count: int) -> None:
    """`count` validly self-signed records for `address`, each claiming every block."""
    genuine = running.servers[0].info
    assert genuine is not None
    dht = await SwarmDHT.start("127.0.0.1", 0, [PeerAddress.of(p) for p in running.peers])
    try:
        template = await dht.get_record(genuine.server_id)
        assert template is not None
        record = dataclasses.replace(template, address=address, blocks=BlockRange(0, 6),
                                     throughput=dataclasses.replace(template.throughput,
                                                                    inference_tokens_per_s=1e6))
        for _ in range(count):
            identity = Identity.generate()
            await dht.announce(identity, dataclasses.replace(record, server_id=identity.server_id), 600.0)
    finally:
        await dht.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedModel:
    from tests.integration.slicing_models import save_checkpoint

    model_dir = save_checkpoint("llama", tmp_path_factory.mktemp("ref") / "tiny-llama", layers=6)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _client(running: RunningSwarm, **config: Any) -> DistributedModelForCausalLM:
    return AutoDistributedModelForCausalLM.from_pretrained(
        running.model_dir, running.peers, config=ClientConfig(initial_peers=(), **config))


def _generate_timed(model: DistributedModelForCausalLM) -> tuple[torch.Tensor, float]:
    began = time.perf_counter()
    out = model.generate(_prompt(), max_new_tokens=NEW_TOKENS, do_sample=False)
    return out, time.perf_counter() - began


def test_sybil_records_for_a_silent_address(tmp_path: Path, reference: PreTrainedModel) -> None:
    expected = reference.generate(_prompt(), max_new_tokens=NEW_TOKENS, do_sample=False)
    silent = SilentServer()
    running = start_swarm(tmp_path, "llama", ["0:2", "2:4", "4:6"], *SERVER_FLAGS)
    try:
        asyncio.run(_announce_sybils(running, silent.address, SYBILS))
        model = _client(running)
        try:
            out, elapsed = _generate_timed(model)
        finally:
            model.close()
        print(f"\n20 Sybil records at a silent address: generation took {elapsed:.2f} s "
              f"({silent.calls} calls reached the silent server)")
        assert torch.equal(out, expected)
        assert silent.calls >= 1, "the Sybil records were never tried: the attack did not happen"
        assert elapsed < 5.0
        # the defence off (the old 10 s open timeout): the same attack costs a full timeout
        slow = _client(running, open_timeout=10.0)
        try:
            out, slow_elapsed = _generate_timed(slow)
        finally:
            slow.close()
        print(f"with a 10 s open timeout: {slow_elapsed:.2f} s")
        assert torch.equal(out, expected) and slow_elapsed > 9.0
    finally:
        running.swarm.stop_all()
        silent.stop()


@pytest.fixture(scope="module")
def honest_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSwarm]:
    """Two honest servers of the whole tiny model (the liar joins as a third replica)."""
    running = start_swarm(tmp_path_factory.mktemp("liars"), "llama", ["0:6", "0:6"], *SERVER_FLAGS)
    yield running
    running.swarm.stop_all()


@pytest.mark.slow  # ~25 s a lie on 2 cores
@pytest.mark.parametrize("lie", ["noise", "zeros", "nan", "passthrough"])
def test_lying_server_is_caught_and_banned(lie: str, honest_replicas: RunningSwarm,
                                           reference: PreTrainedModel) -> None:
    running = honest_replicas
    liar = spawn_liar(running.swarm, lie, f"liar-{lie}", running.model_dir, running.peers,
                      "--blocks", "0:6", "--throughput", "100", *SERVER_FLAGS)
    try:
        running.swarm.wait_serving(liar)
        assert liar.info is not None
        liar_id = liar.info.server_id
        model = _client(running, verify_fraction=1.0, verify_seed=0)
        try:
            # every replica must be on the client's map before the session starts
            entries = model.loop.run(model.layers.client.entries(model.layers.model, 6, refresh=True))
            assert liar_id in entries, "the liar's record never reached the DHT"
            out, _ = _generate_timed(model)
            stats = model.layers.verification
            bans = model.layers.client.bans
            banned = bans.is_banned(liar_id, time.monotonic(), liar.address)
        finally:
            model.close()
        print(f"\n{lie}: {stats}")
        assert torch.equal(out, reference.generate(_prompt(), max_new_tokens=NEW_TOKENS, do_sample=False))
        assert banned, f"the {lie} liar was not banned: {stats}"
        assert liar_id in stats.banned or stats.non_finite > 0
    finally:
        liar.stop()
        running.swarm.servers.remove(liar)
