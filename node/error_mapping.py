"""The one place where server-side errors become gRPC status codes.

Handlers raise errors from `swarm.errors`; `grpc_errors` turns each into a status with
its message, by the one table in `swarm.rpc` (which the client reads backwards). Anything
unexpected is logged with its traceback and answered INTERNAL, and the server keeps
serving everyone else.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from swarm.errors import SessionTimeout
from swarm.rpc import status_for

# `SessionTimeout` and `status_for` live in swarm/ (the client reads the same table);
# they stay importable from here for the server's modules
__all__ = ["SessionTimeout", "grpc_errors", "status_for"]

logger = logging.getLogger(__name__)

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
