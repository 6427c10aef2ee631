"""The block server: load blocks, serve them over gRPC, announce them on the DHT.

    BlockServer(config).run(stop)

Lifecycle: join the DHT, choose blocks (or take --blocks), announce JOINING, load the
blocks (progress bar), measure throughput, start gRPC (block service, health,
reflection), announce ONLINE and re-announce every period. When `stop` is set: announce
DRAINING, refuse new sessions, let open sessions finish within the grace period,
announce OFFLINE, stop gRPC, leave the DHT.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import swarm
from node.allocator import CacheAllocator
from node.announcer import Announcer
from node.backend import BlockBackend
from node.config import ServerConfig
from swarm.model.families import BlockStack, ModelInfo, load_block_stack, read_model_info
from node.inference import InferenceSessions
from node.metrics import ServerMetrics, serve_metrics
from node.next_hops import NextHopProber
from node.memory import auto_num_blocks
from node.placement import ServerSpan, choose_blocks, placement_throughput
from node.rebalancer import Rebalancer
from node.scheduler import Priority, Scheduling
from node.servicer import BlockServicer, add_to_server
from node.state import ServingState
from node.swarm_view import read_spans
from node.throughput import get_throughput
from swarm.codec.entries import sign_record
from swarm.codec.tensors import dtype_name
from swarm.dht import SwarmDHT
from swarm.dht.keys import server_key
from swarm.identity import Identity
from swarm.protocol import ServerInfo
from swarm.records import BlockRange, ServerRecord, ServerState, Throughput
from swarm.rpc import SERVER_OPTIONS

logger = logging.getLogger(__name__)

SERVICE_NAME = "swarm.v1.BlockService"


@dataclass
class _Serving:
    """What exists once blocks are loaded and the gRPC server runs."""

    grpc_server: grpc.aio.Server
    health: health.aio.HealthServicer
    backend: BlockBackend
    allocator: CacheAllocator
    sessions: InferenceSessions
    address: str


class BlockServer:
    """One volunteer's block server."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.identity = (
            Identity.load_or_create(config.identity_path) if config.identity_path else Identity.generate()
        )
        self.info: ModelInfo = read_model_info(config.model)
        self.throughput = Throughput()
        self.state: ServingState | None = None
        self.serving: _Serving | None = None
        self.dht: SwarmDHT | None = None
        self.address = ""
        self.next_hops: NextHopProber | None = None
        self.metrics = ServerMetrics()

    @property
    def server_id(self) -> str:
        return self.identity.server_id

    async def run(self, stop: asyncio.Event) -> None:
        self.dht = await SwarmDHT.start(self.config.host, self.config.dht_port, list(self.config.initial_peers))
        try:
            blocks = self.config.blocks or await self._choose_blocks()
            self.state = ServingState(self.config.model_name, blocks)
            grpc_server, self.address = self._bind()
            announcer = Announcer(self.dht, self.identity, self._record, self.config.update_period,
                                  self.config.record_ttl, self.config.dht_timeout)
            await announcer.announce_now()  # JOINING: others see where we go before we load
            stack = await asyncio.get_running_loop().run_in_executor(None, self._load, blocks)
            self.serving = await self._serve(grpc_server, self.address, stack)
            self.state.phase = ServerState.ONLINE
            prober = NextHopProber(self.dht, self.serving.sessions.pusher, self.config.model_name,
                                   self.info.num_blocks, self.server_id, self.config.dht_timeout)
            self.next_hops = prober
            announcer.before_periodic = lambda: prober.measure(self._blocks())
            await announcer.announce_now()
            logger.info("serving blocks %s of %s at %s (server %s)", blocks, self.config.model_name,
                        self.serving.address, self.server_id[:8])
            logger.info("compute queue: %s scheduling%s", self.config.scheduling.value,
                        f", batch share {self.config.batch_share:g}"
                        if self.config.scheduling is Scheduling.PRIORITY else "")
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(announcer.run(stop))
                if self.config.metrics_port is not None:
                    tasks.create_task(serve_metrics(self.metrics, self.config.host, self.config.metrics_port, stop))
                if self.config.blocks is None:  # --blocks pins the server: no rebalancing
                    rebalancer = Rebalancer(self.dht, self.config.model_name, self.info.num_blocks,
                                            self.config.balance_period, self.config.balance_quality,
                                            self.config.dht_timeout, random.Random())
                    tasks.create_task(rebalancer.run(stop, self._span, lambda b: self._migrate(b, announcer)))
            await self._drain(announcer)
        finally:
            if self.serving is not None:
                await self.serving.grpc_server.stop(grace=1.0)
                await self.serving.sessions.pusher.close()
                self.serving.backend.close()
            await self.dht.stop()

    def _blocks(self) -> BlockRange:
        assert self.state is not None
        return self.state.blocks

    def _span(self) -> ServerSpan | None:
        if self.state is None or self.state.phase is not ServerState.ONLINE:
            return None
        return ServerSpan(self.server_id, self.state.blocks, max(placement_throughput(self.throughput), 1.0))

    async def _migrate(self, target: BlockRange, announcer: Announcer) -> None:
        """Moves to `target` without dropping sessions: load, drain, switch, free."""
        assert self.state is not None and self.serving is not None
        old = self.state.blocks
        logger.info("rebalancing: moving from blocks %s to %s of %s", old, target, self.config.model_name)
        stack = await asyncio.get_running_loop().run_in_executor(None, self._load, target)
        self.state.phase = ServerState.DRAINING  # new sessions go elsewhere from now on
        await announcer.announce_now()
        if not await self.state.wait_idle(self.config.drain_grace):
            logger.warning("moving with %d sessions still open: they fail over", self.state.active_sessions)
        self.serving.sessions.retire_open_sessions()
        self.serving.backend.stack = stack  # the old blocks are freed with the last reference
        self.state.blocks = target
        self.state.phase = ServerState.ONLINE
        await announcer.announce_now()
        logger.info("serving blocks %s of %s at %s (server %s)", target, self.config.model_name,
                    self.serving.address, self.server_id[:8])

    async def _choose_blocks(self) -> BlockRange:
        assert self.dht is not None
        num = self.config.num_blocks or auto_num_blocks(self.config.model, self.config.torch_dtype,
                                                        self.config.cache_tokens, self.info.num_blocks)
        spans = await read_spans(self.dht, self.config.model_name, self.info.num_blocks, self.config.dht_timeout)
        blocks = choose_blocks(spans.values(), self.info.num_blocks, min(num, self.info.num_blocks),
                               max(placement_throughput(self.throughput), 1.0), exclude=self.server_id)
        logger.info("chose blocks %s of %s (%d servers seen)", blocks, self.config.model_name, len(spans))
        return blocks

    def _load(self, blocks: BlockRange) -> BlockStack:
        began = time.perf_counter()
        stack = load_block_stack(self.config.model, blocks, self.config.torch_dtype, progress=True)
        logger.info("loaded blocks %s in %.1f s", blocks, time.perf_counter() - began)
        self.throughput = get_throughput(stack, self.config.model_name, "none", self.config.throughput)
        return stack

    def _bind(self) -> tuple[grpc.aio.Server, str]:
        """Creates the gRPC server and binds its port (so JOINING can carry the address)."""
        server = grpc.aio.server(options=SERVER_OPTIONS)
        port = server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        return server, self.config.public_address or f"{self.config.host}:{port}"

    async def _serve(self, server: grpc.aio.Server, address: str, stack: BlockStack) -> _Serving:
        assert self.state is not None
        backend = BlockBackend(stack, self.config.scheduling, self.config.batch_share)
        allocator = CacheAllocator(self.config.cache_tokens)
        sessions = InferenceSessions(backend, allocator, self.state, self.config, self.server_id, self.metrics)
        self.metrics.cache_tokens_free.set_function(lambda: allocator.free)
        executor = backend.executor
        self.metrics.compute_queued.set_function(lambda: executor.queued)
        for kind in Priority:
            self.metrics.compute_busy_seconds.labels(kind.name.lower()).set_function(
                functools.partial(executor.busy_seconds.__getitem__, kind))
        add_to_server(BlockServicer(backend, sessions, self.state, self.config.tensor_limits, self._info,
                                    self.metrics), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return _Serving(server, health_servicer, backend, allocator, sessions, address)

    async def _drain(self, announcer: Announcer) -> None:
        assert self.state is not None and self.serving is not None
        self.state.phase = ServerState.DRAINING
        for name in ("", SERVICE_NAME):
            await self.serving.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await announcer.announce_now()
        logger.info("draining: waiting up to %.0f s for %d open sessions", self.config.drain_grace,
                    self.state.active_sessions)
        if not await self.state.wait_idle(self.config.drain_grace):
            logger.warning("grace period over with %d sessions still open", self.state.active_sessions)
        self.state.phase = ServerState.OFFLINE
        await announcer.announce_now()

    def _record(self) -> ServerRecord:
        assert self.state is not None
        now = time.time()
        return ServerRecord(
            server_id=self.server_id,
            address=self.address,
            model=self.config.model_name,
            blocks=self.state.blocks,
            state=self.state.phase,
            throughput=self._throughput_now(),
            free_cache_tokens=self.serving.allocator.free if self.serving else self.config.cache_tokens,
            cache_tokens=self.config.cache_tokens,
            dtype=dtype_name(self.serving.backend.stack.dtype) if self.serving else "float32",
            quantization="none",
            version=swarm.__version__,
            next_hop_rtt_ms=self.next_hops.rtt_ms if self.next_hops else {},
            model_num_blocks=self.info.num_blocks,
            hidden_size=self.info.hidden_size,
            issued_at=now,
            expiration=now + self.config.record_ttl,
        )

    def _throughput_now(self) -> Throughput:
        """Measured compute figures plus the latest network figure (float32 hidden states)."""
        if self.next_hops is None or self.next_hops.bytes_per_s is None:
            return self.throughput
        per_token = self.info.hidden_size * 4
        return replace(self.throughput, network_tokens_per_s=round(self.next_hops.bytes_per_s / per_token, 1))

    def _info(self) -> ServerInfo:
        assert self.state is not None and self.serving is not None
        record = self._record()
        return ServerInfo(
            signed_record=sign_record(self.identity, record, server_key(self.server_id)),
            active_sessions=self.state.active_sessions,
            free_cache_tokens=self.serving.allocator.free,
        )
