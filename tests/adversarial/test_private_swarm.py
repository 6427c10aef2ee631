"""A private swarm (TLS + swarm token) against outsiders, with real `swarm-node` processes.

One swarm: a DHT node and three servers (blocks 0:2, 2:4, 4:6 of a tiny Llama), all with
`SWARM_TOKEN` set and the servers serving TLS with a certificate for 127.0.0.1 signed by
a CA made here. From outside:

- a raw gRPC call without the token, or with a wrong one, ends UNAUTHENTICATED with a
  message that says which (and never the token); health checks stay open;
- the client API with a wrong token raises `Unauthenticated` at once: no failover over
  every server, no ban;
- with the token but no CA (plaintext to a TLS server) or another CA, no call gets
  through (UNAVAILABLE, `PeerUnavailable`);
- a DHT node without the token (or with another) sees no peer and no server record;
  with it, all three servers;
- with both, greedy generation through the three servers equals local transformers, and
  the servers' pushes to each other (their own TLS + token calls) all succeed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from transformers import AutoModelForCausalLM

from client.config import ClientConfig
from client.grpc_transport import GrpcTransport
from swarm.addresses import PeerAddress
from swarm.codec import messages
from swarm.codec.limits import TensorLimits
from swarm.dht import DhtConfig, SwarmDHT
from swarm.errors import PeerUnavailable, Unauthenticated
from swarm.rpc import ChannelPool
from swarm.security import TOKEN_METADATA_KEY, RpcSecurity
from swarm.v1 import block_service_pb2_grpc
from tests.integration.conftest import RunningSwarm
from tests.integration.slicing_models import VOCAB, save_checkpoint
from tests.unit.test_security import TlsFiles, write_tls_files

TOKEN = "private-swarm-test-token"
LIMITS = TensorLimits(max_bytes=64 << 20)


@dataclasses.dataclass
class PrivateSwarm:
    running: RunningSwarm
    tls: TlsFiles
    other: TlsFiles
    """A second CA (and its certificate) that the swarm does not use."""

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.running.servers]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSwarm]:
    from devtools.launcher import LocalSwarm, LocalSwarmConfig

    tmp = tmp_path_factory.mktemp("private-swarm")
    tls, other = write_tls_files(tmp / "tls"), write_tls_files(tmp / "other-tls", "other")
    model_dir = save_checkpoint("llama", tmp / "tiny-llama", layers=6)
    base = LocalSwarmConfig.for_tests(tmp)
    swarm = LocalSwarm(dataclasses.replace(base, env={**base.env, "SWARM_TOKEN": TOKEN}))
    try:
        dht = swarm.start_dht()
        procs = [swarm.spawn_server(f"llama-{i}", model_dir, [dht.address], "--blocks", blocks,
                                    "--throughput", "100", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
                                    "--tls-ca", str(tls.ca), "--update-period", "2")
                 for i, blocks in enumerate(["0:2", "2:4", "4:6"])]
        servers = [swarm.wait_serving(p) for p in procs]
    except BaseException:
        swarm.stop_all()
        raise
    yield PrivateSwarm(RunningSwarm(swarm, model_dir, dht, servers), tls, other)
    swarm.stop_all()


def _secure_channel(ca: Path, address: str) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca.read_bytes()))


def test_raw_calls_without_the_token_are_unauthenticated(private: PrivateSwarm) -> None:
    async def attack() -> list[tuple[grpc.StatusCode, str]]:
        seen = []
        for address in private.addresses:
            async with _secure_channel(private.tls.ca, address) as channel:
                stub = block_service_pb2_grpc.BlockServiceStub(channel)  # type: ignore[no-untyped-call]
                for metadata in ((), ((TOKEN_METADATA_KEY, "guess"),), ((TOKEN_METADATA_KEY, TOKEN),)):
                    try:
                        await stub.Info(messages.info_request(), metadata=metadata, timeout=5)
                        seen.append((grpc.StatusCode.OK, ""))
                    except grpc.aio.AioRpcError as error:
                        seen.append((error.code(), error.details() or ""))
                # a stream is refused before any message of it is read
                call = stub.Inference(timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call.read()
                seen.append((refused.value.code(), refused.value.details() or ""))
                health = health_pb2_grpc.HealthStub(channel)
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING  # health stays open
        return seen

    seen = asyncio.run(attack())
    assert len(seen) == 4 * len(private.addresses)
    for i in range(0, len(seen), 4):
        (none, none_text), (wrong, wrong_text), (right, _), (stream, _) = seen[i:i + 4]
        assert none is grpc.StatusCode.UNAUTHENTICATED and "requires a swarm token" in none_text
        assert wrong is grpc.StatusCode.UNAUTHENTICATED and wrong_text == "wrong swarm token"
        assert right is grpc.StatusCode.OK  # the same call with the token is served
        assert stream is grpc.StatusCode.UNAUTHENTICATED
    assert all(TOKEN not in text for _, text in seen)


def test_transport_without_the_token_raises_unauthenticated(private: PrivateSwarm) -> None:
    async def attempt(security: RpcSecurity) -> BaseException | None:
        transport = GrpcTransport(LIMITS, ChannelPool(security))
        try:
            await transport.info(private.addresses[0], timeout=5)
            return None
        except Exception as error:  # the test inspects what was raised
            return error
        finally:
            await transport.close()

    ca = private.tls.ca.read_bytes()
    refused = asyncio.run(attempt(RpcSecurity(tls_ca=ca, swarm_token="wrong")))
    assert isinstance(refused, Unauthenticated) and refused.code == "UNAUTHENTICATED"
    assert "wrong swarm token" in str(refused)
    assert asyncio.run(attempt(RpcSecurity(tls_ca=ca, swarm_token=TOKEN))) is None


def test_client_api_with_a_wrong_token_fails_at_once_without_failover(private: PrivateSwarm) -> None:
    from client.model import AutoDistributedModelForCausalLM

    # (verification off: with three disjoint servers there is no replica to compare with)
    config = ClientConfig(initial_peers=(), tls_ca=private.tls.ca, swarm_token=TOKEN, verify_fraction=0.0)
    model = AutoDistributedModelForCausalLM.from_pretrained(private.running.model_dir, private.running.peers,
                                                            config=config)
    try:
        # the DHT knows the token; the calls to servers carry a wrong one
        wrong = GrpcTransport(LIMITS, ChannelPool(RpcSecurity(tls_ca=private.tls.ca.read_bytes(),
                                                              swarm_token="wrong")))
        model.client.transport = model.layers.transport = wrong
        ids = torch.randint(1, VOCAB, (1, 4), generator=torch.Generator().manual_seed(0))
        began = time.monotonic()
        with pytest.raises(Unauthenticated, match="wrong swarm token"):
            model.generate(ids, max_new_tokens=2, do_sample=False)
        # no failover through every server: the refusal ends the call. (Seen once in a few runs
        # under load: a TLS open refused before its first message was read came back INTERNAL
        # "Internal error from Core", which fails over once before the next server's refusal.)
        assert time.monotonic() - began < 15.0
        assert len(model.client.bans.banned(time.monotonic())) <= 1
    finally:
        model.close()


def test_without_the_ca_nothing_gets_through(private: PrivateSwarm) -> None:
    async def attempt(security: RpcSecurity) -> BaseException | None:
        transport = GrpcTransport(LIMITS, ChannelPool(security))
        try:
            await transport.info(private.addresses[0], timeout=3)
            return None
        except Exception as error:  # the test inspects what was raised
            return error
        finally:
            await transport.close()

    plaintext = asyncio.run(attempt(RpcSecurity(swarm_token=TOKEN)))
    wrong_ca = asyncio.run(attempt(RpcSecurity(tls_ca=private.other.ca.read_bytes(), swarm_token=TOKEN)))
    for refused in (plaintext, wrong_ca):
        assert isinstance(refused, PeerUnavailable), refused
        assert refused.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), refused
    # the same call with the swarm's CA works
    assert asyncio.run(attempt(RpcSecurity(tls_ca=private.tls.ca.read_bytes(), swarm_token=TOKEN))) is None


def test_a_dht_node_without_the_token_sees_nothing(private: PrivateSwarm) -> None:
    base = DhtConfig(client_mode=True, rpc_timeout=1.0, lookup_timeout=3.0, bootstrap_timeout=3.0)
    server_ids = [s.info.server_id for s in private.running.servers if s.info]

    async def look(token: str | None) -> tuple[int, int]:
        config = dataclasses.replace(base, swarm_token=token)
        peers = [PeerAddress.parse(private.running.dht.address)]
        async with await SwarmDHT.start("127.0.0.1", 0, peers, config=config) as dht:
            found = [await dht.get_record(s) for s in server_ids]
            return dht.num_peers, sum(r is not None for r in found)

    assert len(server_ids) == 3
    assert asyncio.run(look(None)) == (0, 0)
    assert asyncio.run(look("another-token")) == (0, 0)
    peers, records = asyncio.run(look(TOKEN))
    assert peers > 0 and records == 3


def test_with_token_and_ca_generation_equals_local(private: PrivateSwarm) -> None:
    from client.model import AutoDistributedModelForCausalLM

    ids = torch.randint(1, VOCAB, (1, 6), generator=torch.Generator().manual_seed(1))
    reference = AutoModelForCausalLM.from_pretrained(private.running.model_dir, dtype=torch.float32).eval()
    expected = reference.generate(ids, max_new_tokens=12, do_sample=False)
    # (verification off: with three disjoint servers there is no replica to compare with)
    config = ClientConfig(initial_peers=(), tls_ca=private.tls.ca, swarm_token=TOKEN, verify_fraction=0.0)
    model = AutoDistributedModelForCausalLM.from_pretrained(private.running.model_dir, private.running.peers,
                                                            config=config)
    try:
        assert torch.equal(model.generate(ids, max_new_tokens=12, do_sample=False), expected)
        # the servers pushed to each other (chained routing) over TLS with the token: no push failed
        assert [s.name for s in private.running.servers if "push of step" in s.text()] == []
    finally:
        model.close()
