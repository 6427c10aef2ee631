"""The UDP protocol's defences without sockets: a fake transport records what it sends.

Routing table only after an answer, one id per address, dead contacts out at once,
stores rate-limited per source, datagrams without the swarm token's MAC dropped unread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable

import umsgpack

from swarm.dht.config import DhtConfig
from swarm.dht.crawl import Peer
from swarm.dht.protocol import HandOffJob, Job, SwarmProtocol, VerifyJob
from swarm.dht.ratelimit import RateLimit
from swarm.dht.seal import DatagramSeal
from swarm.dht.storage import EntryStore

ATTACKER = ("127.0.0.9", 4000)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((data, address))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def make(config: DhtConfig = DhtConfig()) -> tuple[SwarmProtocol, list[Job], FakeTransport]:
    jobs: list[Job] = []
    protocol = SwarmProtocol(os.urandom(20), EntryStore(config.storage), config, _queue(jobs))
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, jobs, transport


def request(name: str, *args: object) -> bytes:
    return b"\x00" + os.urandom(20) + umsgpack.packb([name, list(args)])


def table(protocol: SwarmProtocol) -> set[bytes]:
    return {bytes(n.id) for bucket in protocol.router.buckets for n in bucket.nodes.values()}


def test_requests_with_random_ids_never_enter_the_table_and_trigger_few_pings() -> None:
    protocol, jobs, transport = make()
    for _ in range(500):
        protocol.datagram_received(request("ping", os.urandom(20)), ATTACKER)
    assert table(protocol) == set()
    assert jobs == [VerifyJob(ATTACKER)]  # one check queued while it is pending
    assert len(transport.sent) == 500  # every ping answered, nothing else sent
    protocol.verified(ATTACKER, None)  # it did not answer our ping
    for _ in range(500):
        protocol.datagram_received(request("ping", os.urandom(20)), ATTACKER)
    assert len(jobs) == 2 and table(protocol) == set()  # burst 2 of the contact limit spent
    for port in range(10):  # other sources have their own buckets
        protocol.datagram_received(request("find_node", os.urandom(20), os.urandom(20)), ("127.0.0.9", 5000 + port))
    assert len(jobs) == 12


def test_an_answer_to_our_ping_admits_the_id_it_states_one_per_address() -> None:
    protocol, jobs, _ = make()
    first, second = os.urandom(20), os.urandom(20)
    protocol.verified(ATTACKER, first)
    assert table(protocol) == {first} and jobs == [HandOffJob(Peer(first, *ATTACKER))]
    protocol.answered(Peer(second, *ATTACKER))  # a third party named another id there: ignored
    assert table(protocol) == {first}
    protocol.verified(ATTACKER, second)  # the node itself says so (restarted): replaced
    assert table(protocol) == {second}
    protocol.verified(ATTACKER, b"short")
    protocol.verified(ATTACKER, protocol.node_id)
    assert table(protocol) == {second}


def test_a_known_contact_is_refreshed_without_a_ping() -> None:
    protocol, jobs, _ = make()
    known = os.urandom(20)
    protocol.verified(ATTACKER, known)
    jobs.clear()
    protocol.datagram_received(request("ping", known), ATTACKER)
    assert jobs == [] and table(protocol) == {known}
    protocol.datagram_received(request("ping", None), ("127.0.0.9", 9))  # client mode: no id, no ping
    assert jobs == []


def test_a_silent_contact_leaves_at_once_and_is_not_asked_again() -> None:
    protocol, _, _ = make()
    peer = Peer(os.urandom(20), *ATTACKER)
    protocol.verified(ATTACKER, peer.node_id)
    protocol.forget(peer)
    assert table(protocol) == set() and protocol.is_unreachable(peer)
    protocol.verified(ATTACKER, peer.node_id)  # it answers a ping of ours again: back
    assert table(protocol) == {peer.node_id} and not protocol.is_unreachable(peer)


def test_stores_are_rate_limited_per_source() -> None:
    config = DhtConfig(store_limit=RateLimit(rate=0.0, burst=3.0))
    protocol, _, transport = make(config)
    for _ in range(5):
        protocol.datagram_received(request("store", None, os.urandom(20), b"\x0a\x05ab"), ATTACKER)
    assert len(transport.sent) == 5
    protocol.datagram_received(request("store", None, os.urandom(20), b"junk"), ("127.0.0.9", 1))
    assert len(transport.sent) == 6  # another source is still heard (answered False: bad value)


def test_without_the_swarm_token_nothing_is_read_answered_or_admitted() -> None:
    config = dataclasses.replace(DhtConfig(), swarm_token="s3cret")
    assert "s3cret" not in repr(config)
    protocol, jobs, transport = make(config)
    for datagram in (request("ping", os.urandom(20)), request("find_node", None, os.urandom(20)),
                     DatagramSeal("wrong").seal(request("ping", os.urandom(20))), b"", os.urandom(40)):
        protocol.datagram_received(datagram, ATTACKER)
    assert transport.sent == [] and jobs == [] and table(protocol) == set()
    seal = DatagramSeal("s3cret")
    protocol.datagram_received(seal.seal(request("stun")), ATTACKER)
    assert len(transport.sent) == 1
    answer, to = transport.sent[0]
    assert to == ATTACKER and seal.open(answer) is not None and answer[:1] == b"\x01"
    assert umsgpack.unpackb(seal.open(answer)[21:]) == list(ATTACKER)  # type: ignore[index]


def test_requests_we_send_carry_the_mac() -> None:
    async def scenario() -> None:
        protocol, _, transport = make(dataclasses.replace(DhtConfig(rpc_timeout=0.01), swarm_token="t"))
        assert await protocol.request(ATTACKER, "ping", None) is None  # nobody answers
        sent, _ = transport.sent[0]
        assert DatagramSeal("t").open(sent) is not None and DatagramSeal("u").open(sent) is None

    asyncio.run(scenario())


def _queue(jobs: list[Job]) -> Callable[[Job], bool]:
    def enqueue(job: Job) -> bool:
        jobs.append(job)
        return True

    return enqueue
