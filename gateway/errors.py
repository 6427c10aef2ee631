"""Errors -> OpenAI's error format (HTTP) and gRPC statuses: the gateway's one mapping.

    InvalidRequest (gateway.sampling)     400 invalid_request_error   INVALID_ARGUMENT
      code "model_not_found"              404                         NOT_FOUND
    swarm InvalidInput / RemoteInvalidInput  400                      INVALID_ARGUMENT
    NoRoute, PeerUnavailable, other SwarmError  503 server_error      UNAVAILABLE
    anything else                         500 server_error (logged)   INTERNAL

OpenAI's body: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from aiohttp import web

from gateway.sampling import InvalidRequest
from swarm.errors import InvalidInput, NoRoute, RemoteInvalidInput, SwarmError

logger = logging.getLogger(__name__)


def status_of(error: BaseException) -> int:
    if isinstance(error, InvalidRequest):
        return 404 if error.code == "model_not_found" else 400
    if isinstance(error, (InvalidInput, RemoteInvalidInput)):
        return 400
    if isinstance(error, SwarmError):
        return 503
    return 500


def error_body(error: BaseException) -> dict[str, Any]:
    """OpenAI's error object for `error` (an unexpected one is logged with its traceback)."""
    status = status_of(error)
    if status == 500:
        logger.error("request failed unexpectedly", exc_info=error)
        message = f"internal error: {type(error).__name__}"
    else:
        message = str(error) or type(error).__name__
    param = error.param if isinstance(error, InvalidRequest) else None
    code: str | None = error.code if isinstance(error, InvalidRequest) else None
    if code is None and status == 503:
        code = "no_route" if isinstance(error, NoRoute) else "swarm_unavailable"
        message = f"the swarm cannot serve this request now: {message}"
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(error: BaseException) -> web.Response:
    return web.json_response(error_body(error), status=status_of(error))


def http_error(status: int, message: str) -> web.Response:
    """An HTTP-level failure (unknown path, wrong method, body too large) in OpenAI's format."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": None}},
                             status=status)


def grpc_status_of(error: BaseException) -> grpc.StatusCode:
    return {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
            503: grpc.StatusCode.UNAVAILABLE}.get(status_of(error), grpc.StatusCode.INTERNAL)
