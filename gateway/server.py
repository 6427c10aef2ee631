"""The gateway process: builds the pieces, listens on HTTP and gRPC, stops on a signal.

One event loop (uvloop where available) runs the aiohttp app and the grpc.aio server;
the swarm client runs on its own loop thread and generations on the engine's threads.
SIGTERM or SIGINT stop new work, give in-flight calls `grace` seconds, then close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.engine import Engine
from gateway.grpc_service import TextGenerationService, start_grpc_server
from gateway.http_app import build_app
from gateway.metrics import GatewayMetrics
from gateway.openai_api import OpenAIApi
from gateway.prompts import Prompts
from gateway.requests import Limits
from gateway.swarm_view import SwarmView

logger = logging.getLogger(__name__)


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids as `generate` uses them: the generation config's, else the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


class Gateway:
    """The listeners and what they share; `start` binds, `stop` drains and closes."""

    def __init__(self, config: GatewayConfig, model: Any, tokenizer: Any, model_ids: Sequence[str]) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.engine = Engine(model, tokenizer, eos_token_ids(model, tokenizer), config.max_concurrent, self.metrics)
        self.prompts = Prompts(tokenizer, model_ids, self.engine.max_context)
        limits = Limits(config.default_max_tokens, config.max_tokens_limit)
        view = SwarmView(model.client, model.loop, self.prompts.model_name, config.update_period,
                         config.ping_timeout)
        app = build_app(OpenAIApi(self.engine, self.prompts, limits, self.metrics), view, self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        self._service = TextGenerationService(self.engine, self.prompts, limits, self.metrics)
        self._grpc: grpc.aio.Server | None = None
        self.http_address = ""
        self.grpc_address = ""

    async def start(self) -> None:
        """Binds both listeners (a taken port raises OSError) and records their addresses."""
        host = self.config.host
        await self._runner.setup()
        await web.TCPSite(self._runner, host, self.config.port, reuse_port=False).start()
        self.http_address = f"{host}:{int(self._runner.addresses[0][1])}"
        self._grpc, grpc_port = await start_grpc_server(self._service, host, self.config.grpc_port)
        self.grpc_address = f"{host}:{grpc_port}"
        logger.info("serving %s: OpenAI API and web page on http://%s, gRPC TextGeneration on %s",
                    self.prompts.model_name, self.http_address, self.grpc_address)

    async def stop(self) -> None:
        """In-flight gRPC calls get `grace` seconds; HTTP handlers are awaited by aiohttp's shutdown."""
        if self._grpc is not None:
            await self._grpc.stop(self.config.grace)
        await self._runner.shutdown()
        await self._runner.cleanup()
        self.engine.close()


async def serve(config: GatewayConfig, model: Any, tokenizer: Any, model_ids: Sequence[str]) -> int:
    """Serves until SIGTERM/SIGINT; returns the exit code."""
    gateway = Gateway(config, model, tokenizer, model_ids)
    try:
        await gateway.start()
        if config.ready_file is not None:
            write_ready_file(config.ready_file, gateway.http_address, gateway.grpc_address)
        await _wait_for_signal()
        logger.info("stopping: in-flight calls get %.0f s", config.grace)
    finally:
        await gateway.stop()
    return 0


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def write_ready_file(path: Path, http: str, grpc: str) -> None:
    """Written whole (temporary file, then rename), so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"http": http, "grpc": grpc, "pid": os.getpid()}))
    tmp.replace(path)
