"""The gateway's HTTP app (aiohttp): OpenAI API, swarm map, web page, metrics.

    GET  /                      the web page (static/index.html; static/* its scripts)
    GET  /v1/models             \
    POST /v1/completions         > OpenAI-compatible (gateway.openai_api)
    POST /v1/chat/completions   /
    GET  /api/v1/swarm          the swarm map with reachability (gateway.swarm_view)
    GET  /metrics               Prometheus text format (gateway.metrics)
    GET  /healthz               200 "ok" while the process serves

Unknown paths, wrong methods and oversized bodies answer in OpenAI's error format too,
so API clients always get a JSON error they can show.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from gateway.errors import error_response, http_error
from gateway.metrics import GatewayMetrics
from gateway.openai_api import OpenAIApi
from gateway.swarm_view import SwarmView

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 << 20
"""Largest request body (a 1 Mi-character prompt in JSON fits)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_dir() -> Path:
    """The page's files, shipped as package data."""
    return Path(str(importlib.resources.files("gateway") / "static"))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors and unexpected failures as OpenAI error objects."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return http_error(error.status, error.reason if error.status != 413 else
                          f"the request body is larger than {MAX_BODY_BYTES} bytes")
    except Exception as error:  # one handler's failure must not take the gateway down
        return error_response(error)


def build_app(api: OpenAIApi, view: SwarmView, metrics: GatewayMetrics) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    page = static_dir()

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(page / "index.html")

    async def swarm(request: web.Request) -> web.Response:
        return web.json_response(await view.snapshot())

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.add_routes([web.get("/", index), web.get("/api/v1/swarm", swarm), web.get("/metrics", prometheus),
                    web.get("/healthz", health), *api.routes(), web.static("/static", page)])
    return app
