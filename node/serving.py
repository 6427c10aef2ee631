"""A block server from the moment its blocks are loaded: serve, re-announce, move, drain.

    running = RunningServer(parts)          # made once the DHT, state and blocks exist
    await running.serve(stop)              # ONLINE ... DRAINING ... OFFLINE
    await running.close()

`node.server.BlockServer` builds the parts in start-up order (DHT, blocks, state, gRPC
port, JOINING, load) and hands them over here, so nothing in this class is "not there
yet". What the server publishes is `node.record.build_record` of its state and
measurements; the ready file (`--ready-file`) is written when the "serving blocks" line
is logged, again after each move, and once more when draining starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node.adapters import load_adapters
from node.allocator import CacheAllocator
from node.announcer import Announcer
from node.backend import BlockBackend
from node.config import ServerConfig
from node.inference import InferenceSessions
from node.metrics import ServerMetrics, serve_metrics
from node.next_hops import NextHopProber
from node.placement import ServerSpan, span_from_record
from node.push_client import PushClient
from node.ready_file import dialable, write_ready_file
from node.rebalancer import Rebalancer
from node.record import Measurements, ServerFacts, build_record
from node.scheduler import Priority, Scheduling
from node.servicer import BlockServicer, add_to_server
from node.state import ServingState
from swarm.codec.entries import sign_record
from swarm.codec.tensors import dtype_name
from swarm.dht import SwarmDHT
from swarm.dht.keys import server_key
from swarm.identity import Identity
from swarm.model.families import BlockStack
from swarm.protocol import ServerInfo
from swarm.records import BlockRange, ServerRecord, ServerState, Throughput
from swarm.rpc import PUBLIC
from swarm.security import RpcSecurity

logger = logging.getLogger("node.server")  # the lifecycle lines users read keep their source

SERVICE_NAME = "swarm.v1.BlockService"

Loader = Callable[[BlockRange], tuple[BlockStack, Throughput]]
"""Loads blocks and measures them (blocking: runs on an executor thread)."""


@dataclass(frozen=True)
class StartedParts:
    """What start-up made, in its order, for `RunningServer`."""

    config: ServerConfig
    identity: Identity
    metrics: ServerMetrics
    dht: SwarmDHT
    state: ServingState
    facts: ServerFacts
    grpc_server: grpc.aio.Server
    """Bound, not started."""
    stack: BlockStack
    compute: Throughput
    load: Loader
    security: RpcSecurity = PUBLIC
    """TLS and the swarm token of this server's own outgoing calls (pushes, probes)."""


class RunningServer:
    """A block server whose blocks are loaded; every part exists from construction on."""

    def __init__(self, parts: StartedParts) -> None:
        self.config = config = parts.config
        self.identity = parts.identity
        self.metrics = parts.metrics
        self.dht = parts.dht
        self.state = parts.state
        self.facts = parts.facts
        self.grpc_server = parts.grpc_server
        self.load = parts.load
        self.measurements = Measurements(compute=parts.compute)
        self.backend = BlockBackend(parts.stack, config.scheduling, config.batch_share,
                                    load_adapters(config.adapters, parts.stack))
        self.allocator = CacheAllocator(config.cache_tokens, config.max_peer_cache_share,
                                        config.evict_idle_after)
        # pushes and probes to peers carry the token, over TLS if set (a private swarm)
        self.sessions = InferenceSessions(self.backend, self.allocator, self.state, config,
                                          self.facts.server_id, self.metrics,
                                          PushClient(config.push_timeout, parts.security))
        self.sessions.own_addresses = frozenset({self.facts.address})  # next hops may not loop back here
        self.health = health.aio.HealthServicer()
        self.prober = NextHopProber(self.dht, self.sessions.pusher, config.model_name,
                                    self.facts.model_num_blocks, self.facts.server_id, config.dht_timeout)
        self.announcer = Announcer(self.dht, self.identity, self.record, config.update_period,
                                   config.record_ttl, config.dht_timeout, before_periodic=self._measure_links)

    def record(self) -> ServerRecord:
        """The record of the server now (unstamped; see `node.record`)."""
        return build_record(self.facts, self.state, self.measurements, self.allocator.free,
                            dtype_name(self.backend.stack.dtype))

    async def serve(self, stop: asyncio.Event) -> None:
        """Starts gRPC, goes ONLINE and serves until `stop` is set; then drains."""
        await self._start_grpc()
        self.state.phase = ServerState.ONLINE
        await self.announcer.announce_now()
        self._serving_now()
        logger.info("compute queue: %s scheduling%s", self.config.scheduling.value,
                    f", batch share {self.config.batch_share:g}"
                    if self.config.scheduling is Scheduling.PRIORITY else "")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.announcer.run(stop))
            if self.config.metrics_port is not None:
                tasks.create_task(serve_metrics(self.metrics, self.config.host, self.config.metrics_port, stop))
            if self.config.blocks is None:  # --blocks pins the server: no rebalancing
                rebalancer = Rebalancer(self.dht, self.config.model_name, self.facts.model_num_blocks,
                                        self.config.balance_period, self.config.balance_quality,
                                        self.config.dht_timeout, random.Random())
                tasks.create_task(rebalancer.run(stop, self.span, self.migrate))
        await self._drain()

    async def close(self) -> None:
        """Stops gRPC and frees the blocks (the DHT is the caller's)."""
        await self.grpc_server.stop(grace=1.0)
        await self.sessions.pusher.close()
        self.backend.close()

    def span(self) -> ServerSpan | None:
        """This server as placement sees it: from its own record, as its peers see it."""
        if self.state.phase is not ServerState.ONLINE:
            return None
        return span_from_record(self.record())

    async def migrate(self, target: BlockRange) -> None:
        """Moves to `target` without dropping sessions: load, drain, switch, free."""
        old = self.state.blocks
        logger.info("rebalancing: moving from blocks %s to %s of %s", old, target, self.config.model_name)
        stack, compute = await asyncio.get_running_loop().run_in_executor(None, self.load, target)
        self.measurements = self.measurements.with_compute(compute)
        self.state.phase = ServerState.DRAINING  # new sessions go elsewhere from now on
        await self.announcer.announce_now()
        if not await self.state.wait_idle(self.config.drain_grace):
            logger.warning("moving with %d sessions still open: they fail over", self.state.active_sessions)
        self.sessions.retire_open_sessions()
        self.backend.stack = stack  # the old blocks are freed with the last reference
        self.state.blocks = target
        self.state.phase = ServerState.ONLINE
        await self.announcer.announce_now()
        self._serving_now()

    def _serving_now(self) -> None:
        stack = self.backend.stack
        cache_bytes = self.config.cache_tokens * stack.cache_bytes_per_token(stack.blocks)
        logger.info("serving blocks %s of %s at %s (server %s); KV cache budget %d tokens = %.1f MiB",
                    self.state.blocks, self.config.model_name, self.facts.address, self.facts.server_id[:8],
                    self.config.cache_tokens, cache_bytes / 2**20)
        self._write_ready_file()

    def _write_ready_file(self) -> None:
        if self.config.ready_file is None:
            return
        write_ready_file(self.config.ready_file, {
            "kind": "server", "pid": os.getpid(), "server_id": self.facts.server_id,
            "grpc_address": self.facts.address, "dht_address": dialable(self.config.host, self.dht.port),
            "model": self.facts.model, "blocks": str(self.state.blocks), "state": self.state.phase.name.lower(),
        })

    async def _measure_links(self) -> None:
        await self.prober.measure(self.state.blocks)
        self.measurements = self.measurements.with_links(self.prober.rtt_ms, self.prober.bytes_per_s,
                                                         self.facts.hidden_size)

    async def _start_grpc(self) -> None:
        self._export_metrics()
        add_to_server(BlockServicer(self.backend, self.sessions, self.state, self.config.tensor_limits,
                                    self._info, self.metrics), self.grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), self.grpc_server)
        await self.grpc_server.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def _export_metrics(self) -> None:
        allocator, executor = self.allocator, self.backend.executor
        facts, state = self.facts, self.state
        self.metrics.cache_tokens_free.set_function(lambda: allocator.free)
        self.metrics.cache_tokens_capacity.set(facts.cache_tokens)
        self.metrics.compute_queued.set_function(lambda: executor.queued)
        self.metrics.count_busy_seconds(lambda: {kind.name.lower(): executor.busy_seconds[kind] for kind in Priority})
        self.metrics.describe_server(lambda: {"model": facts.model, "blocks": str(state.blocks),
                                              "version": facts.version, "server_id": facts.server_id})

    async def _drain(self) -> None:
        self.state.phase = ServerState.DRAINING
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.announcer.announce_now()
        self._write_ready_file()
        logger.info("draining: waiting up to %.0f s for %d open sessions", self.config.drain_grace,
                    self.state.active_sessions)
        if not await self.state.wait_idle(self.config.drain_grace):
            logger.warning("grace period over with %d sessions still open", self.state.active_sessions)
        self.state.phase = ServerState.OFFLINE
        await self.announcer.announce_now()

    def _info(self) -> ServerInfo:
        record = self.dht.stamp(self.identity, self.record(), self.config.record_ttl)
        return ServerInfo(
            signed_record=sign_record(self.identity, record, server_key(self.facts.server_id)),
            active_sessions=self.state.active_sessions,
            free_cache_tokens=self.allocator.free,
        )
