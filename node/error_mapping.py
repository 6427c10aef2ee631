"""The one place where server-side errors become gRPC status codes.

Handlers raise errors from `swarm.errors`; `grpc_errors` turns each into a status with
its message. Anything unexpected is logged with its traceback and answered INTERNAL, and
the server keeps serving everyone else.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from swarm.errors import (
    CacheExhausted,
    InvalidInput,
    NotServed,
    ServerDraining,
    SessionStateError,
    SwarmError,
)

logger = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[SwarmError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (SessionStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (NotServed, grpc.StatusCode.NOT_FOUND),
    (CacheExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServerDraining, grpc.StatusCode.UNAVAILABLE),
)


class SessionTimeout(SwarmError):
    """An inference session stayed idle past its timeout (DEADLINE_EXCEEDED)."""


def status_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code a server-side error is answered with."""
    if isinstance(error, SessionTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    for error_type, code in _STATUS:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


F = TypeVar("F", bound=Callable[..., Any])


async def _abort(servicer: Any, context: grpc.aio.ServicerContext, error: Exception, method: str) -> None:
    code = status_for(error)
    metrics = getattr(servicer, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code.name).inc()
    if code is grpc.StatusCode.INTERNAL:
        logger.exception("%s failed with an unexpected error", method, exc_info=error)
        message = f"internal server error: {type(error).__name__}: {error}"
    else:
        logger.info("%s answered %s: %s", method, code.name, error)
        message = str(error)
    await context.abort(code, message)


def grpc_errors(handler: F) -> F:
    """Wraps a grpc.aio handler (coroutine or async generator) with the error mapping."""
    name = handler.__name__
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream_wrapper(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for response in handler(self, request, context):
                    yield response
            except Exception as error:  # noqa: BLE001 - mapped to a status, then re-raised by abort
                if isinstance(error, grpc.aio.AbortError):
                    raise
                await _abort(self, context, error, name)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(handler)
    async def unary_wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await handler(self, request, context)
        except Exception as error:  # noqa: BLE001 - mapped to a status, then re-raised by abort
            if isinstance(error, grpc.aio.AbortError):
                raise
            await _abort(self, context, error, name)

    return unary_wrapper  # type: ignore[return-value]
