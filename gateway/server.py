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


async def serve(config: GatewayConfig, model: Any, tokenizer: Any, model_ids: Sequence[str]) -> int:
    """Serves until SIGTERM/SIGINT; returns the exit code."""
    metrics = GatewayMetrics()
    engine = Engine(model, tokenizer, eos_token_ids(model, tokenizer), config.max_concurrent, metrics)
    prompts = Prompts(tokenizer, model_ids, engine.max_context)
    limits = Limits(config.default_max_tokens, config.max_tokens_limit)
    view = SwarmView(model.client, model.loop, prompts.model_name, config.update_period, config.ping_timeout)
    runner = web.AppRunner(build_app(OpenAIApi(engine, prompts, limits, metrics), view, metrics), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_port=False)
        await site.start()
        http_port = int(runner.addresses[0][1])
        grpc_server, grpc_port = await start_grpc_server(TextGenerationService(engine, prompts, limits, metrics),
                                                         config.host, config.grpc_port)
        try:
            logger.info("serving %s: OpenAI API and web page on http://%s:%d, gRPC TextGeneration on %s:%d",
                        prompts.model_name, config.host, http_port, config.host, grpc_port)
            if config.ready_file is not None:
                write_ready_file(config.ready_file, f"{config.host}:{http_port}", f"{config.host}:{grpc_port}")
            await _wait_for_signal()
            logger.info("stopping: in-flight calls get %.0f s", config.grace)
        finally:
            await grpc_server.stop(config.grace)
    finally:
        await runner.shutdown()
        await runner.cleanup()
        engine.close()
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
