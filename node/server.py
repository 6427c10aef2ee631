"""The block server: load blocks, serve them over gRPC, announce them on the DHT.

    BlockServer(config).run(stop)

Lifecycle: join the DHT, choose blocks (or take --blocks), bind the gRPC port, announce
JOINING, load the blocks (progress bar) and measure throughput; then a `RunningServer`
(`node.serving`) starts gRPC (block service, health, reflection), announces ONLINE and
re-announces every period. When `stop` is set: announce DRAINING, refuse new sessions,
let open sessions finish within the grace period, announce OFFLINE, stop gRPC, leave
the DHT. This module is the start-up order; what a serving server does is `node.serving`.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from node.announcer import announce_record
from node.config import ServerConfig
from node.memory import auto_num_blocks
from node.metrics import ServerMetrics
from node.placement import choose_blocks, credited_throughput
from node.record import Measurements, ServerFacts, build_record
from node.serving import RunningServer, StartedParts
from node.state import ServingState
from node.swarm_view import read_spans
from node.throughput import get_throughput
from swarm.model.device import resolve_device
from swarm.dht import DhtConfig, SwarmDHT
from swarm.identity import Identity
from swarm.model.families import BlockStack, ModelInfo, load_block_stack, read_model_info
from swarm.records import BlockRange, Throughput
from swarm.rpc import bind_server, make_server
from swarm.security import RpcSecurity

logger = logging.getLogger(__name__)


class BlockServer:
    """One volunteer's block server."""

    def __init__(self, config: ServerConfig, security: RpcSecurity | None = None) -> None:
        self.config = config
        self.security = security if security is not None else config.load_security()
        """TLS and the swarm token (`swarm.security`); read before any work."""
        self.identity = (
            Identity.load_or_create(config.identity_path) if config.identity_path else Identity.generate()
        )
        self.info: ModelInfo = read_model_info(config.model)
        self.device = resolve_device(config.device)
        """Where blocks, caches and the throughput probe run (`DeviceUnavailable` if absent)."""
        self.metrics = ServerMetrics()

    @property
    def server_id(self) -> str:
        return self.identity.server_id

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        logger.info("gRPC security: %s", self.security.describe())
        dht = await SwarmDHT.start(config.host, config.dht_port, config.initial_peers,
                                   config=DhtConfig(swarm_token=self.security.swarm_token))
        try:
            blocks = config.blocks or await self._choose_blocks(dht)
            state = ServingState(config.model_name, blocks)
            grpc_server, address = self._bind()
            facts = ServerFacts(self.server_id, address, config.model_name, self.info.num_blocks,
                                self.info.hidden_size, config.cache_tokens, quantization=config.quantization,
                                adapters=tuple(a.name for a in config.adapters))
            # JOINING: others see where we go before we load
            joining = build_record(facts, state, Measurements(), config.cache_tokens, "float32")
            await announce_record(dht, self.identity, joining, config.record_ttl, config.dht_timeout)
            stack, compute = await asyncio.get_running_loop().run_in_executor(None, self._load, blocks)
            running = RunningServer(StartedParts(config, self.identity, self.metrics, dht, state, facts,
                                                 grpc_server, stack, compute, self._load, self.security))
            try:
                await running.serve(stop)
            finally:
                await running.close()
        finally:
            await dht.stop()

    async def _choose_blocks(self, dht: SwarmDHT) -> BlockRange:
        config, num_blocks = self.config, self.info.num_blocks
        num = config.num_blocks or auto_num_blocks(config.model, config.torch_dtype, config.cache_tokens, num_blocks,
                                                   config.quantization, self.device)
        spans = await read_spans(dht, config.model_name, num_blocks, config.dht_timeout)
        # not measured before loading: credited like any peer that states no speed
        blocks = choose_blocks(spans.values(), num_blocks, min(num, num_blocks),
                               credited_throughput(Throughput()), exclude=self.server_id)
        logger.info("chose blocks %s of %s (%d servers seen)", blocks, config.model_name, len(spans))
        return blocks

    def _load(self, blocks: BlockRange) -> tuple[BlockStack, Throughput]:
        """Loads and measures `blocks` (blocking: runs on an executor thread; mutates nothing)."""
        began = time.perf_counter()
        stack = load_block_stack(self.config.model, blocks, self.config.torch_dtype, self.device, progress=True,
                                 quantization=self.config.quantization)
        logger.info("loaded blocks %s in %.1f s", blocks, time.perf_counter() - began)
        return stack, get_throughput(stack, self.config.model_name, stack.quantization, self.config.throughput)

    def _bind(self) -> tuple[grpc.aio.Server, str]:
        """Creates the gRPC server and binds its port (so JOINING can carry the address).

        TLS and the token check as `self.security` says; a taken port raises `PortInUse`.
        """
        server = make_server(self.security)
        port = bind_server(server, self.config.host, self.config.port, self.security)
        return server, self.config.public_address or f"{self.config.host}:{port}"
