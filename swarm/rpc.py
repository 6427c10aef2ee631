"""The one RPC module: gRPC options, the message cap, channels, pings, status <-> error.

Both sides use it: the block server for its server options and to answer an error with
a status (`status_for`), the client and a server's push client for their channels, the
health ping and to turn a failed call back into a typed error (`error_from_status`,
`rpc_errors`). `STATUS_TABLE` is the single mapping, read in both directions.

Not here: the calls themselves (`client.grpc_transport`, `node.push_client`), the
servicer's decorator (`node.error_mapping`), anything that touches protobuf messages of
our own (`swarm.codec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm.errors import (
    CacheExhausted,
    InvalidInput,
    NotServed,
    PeerBusy,
    PeerRefused,
    PeerTimedOut,
    PeerUnavailable,
    RemoteError,
    RemoteInvalidInput,
    ServerDraining,
    SessionStateError,
    SessionTimeout,
    SwarmError,
)
from swarm.v1 import block_service_pb2_grpc

MAX_MESSAGE_BYTES = 512 << 20
"""gRPC message cap on every channel and server (a long prompt's hidden states exceed
the 4 MB default)."""

_CAP_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

CHANNEL_OPTIONS = (
    *_CAP_OPTIONS,
    # fail fast on a dead peer instead of waiting for TCP timeouts
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # retrying is the session's decision (by error class), not the channel's
    ("grpc.enable_retries", 0),
)
"""Options of every client-side channel (the client's and a server's push client)."""

SERVER_OPTIONS = (
    *_CAP_OPTIONS,
    # grpcio sets SO_REUSEPORT by default: a second server on a taken port would start and
    # silently get half the connections; without it the bind fails
    ("grpc.so_reuseport", 0),
)
"""Options of the block server."""


@dataclass(frozen=True)
class StatusRow:
    """One status: what a server raises to answer it, what a client raises on seeing it."""

    code: grpc.StatusCode
    raised: type[SwarmError]
    """The server-side class answered with `code` (subclasses included)."""
    remote: type[RemoteError]
    """The class the client raises when a call ends with `code`."""


STATUS_TABLE: tuple[StatusRow, ...] = (
    StatusRow(grpc.StatusCode.INVALID_ARGUMENT, InvalidInput, RemoteInvalidInput),
    StatusRow(grpc.StatusCode.FAILED_PRECONDITION, SessionStateError, PeerRefused),
    StatusRow(grpc.StatusCode.NOT_FOUND, NotServed, PeerRefused),
    StatusRow(grpc.StatusCode.RESOURCE_EXHAUSTED, CacheExhausted, PeerBusy),
    StatusRow(grpc.StatusCode.UNAVAILABLE, ServerDraining, PeerUnavailable),
    StatusRow(grpc.StatusCode.DEADLINE_EXCEEDED, SessionTimeout, PeerTimedOut),
)
"""The status <-> error mapping. A server error in no row is a bug: INTERNAL. A status
in no row (INTERNAL, CANCELLED, a stream ended with OK before its answer, ...) means the
peer failed, not our request: PeerUnavailable."""

_REMOTE_BY_CODE = {row.code: row.remote for row in STATUS_TABLE}


def status_for(error: BaseException) -> grpc.StatusCode:
    """The status a server answers `error` with (INTERNAL for anything unexpected)."""
    for row in STATUS_TABLE:
        if isinstance(error, row.raised):
            return row.code
    return grpc.StatusCode.INTERNAL


def error_from_status(code: grpc.StatusCode, details: str | None, peer: str, what: str) -> RemoteError:
    """The typed error for `what` (a call to `peer`) that ended with status `code`."""
    remote = _REMOTE_BY_CODE.get(code, PeerUnavailable)
    return remote(f"{what} on {peer} failed: {code.name}: {details}", code=code.name, peer=peer)


def error_from_call(error: BaseException, peer: str, what: str) -> SwarmError:
    """The typed error for a call to `peer` that raised `error` (a timeout, a status, ...)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error_from_status(error.code(), error.details(), peer, what)
    if isinstance(error, TimeoutError):
        return PeerTimedOut(f"{what} on {peer} timed out", code="DEADLINE_EXCEEDED", peer=peer)
    if isinstance(error, SwarmError):
        return error
    # e.g. a write on a call the peer already ended (asyncio.InvalidStateError, UsageError)
    return PeerUnavailable(f"{what} on {peer} failed: {type(error).__name__}: {error}", peer=peer)


CALL_FAILURES = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, TimeoutError)
"""What a grpc.aio call raises when it fails (the statuses, a write on an ended call, our
own `asyncio.wait_for` timeouts)."""


async def call_failure(call: Any, error: BaseException, peer: str, what: str) -> SwarmError:
    """The typed error for a grpc.aio `call` that failed with `error`.

    A write on a call the peer has ended fails before the status arrives: once the call
    is done, its own status says why (e.g. NOT_FOUND for a session the peer dropped).
    """
    if not isinstance(error, grpc.aio.AioRpcError) and call.done():
        return error_from_status(await call.code(), await call.details(), peer, what)
    return error_from_call(error, peer, what)


@contextlib.contextmanager
def rpc_errors(peer: str, what: str) -> Iterator[None]:
    """Re-raises a failed gRPC call or a timeout inside as the typed error."""
    try:
        yield
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        raise error_from_call(error, peer, what) from error


class ChannelPool:
    """One grpc.aio channel per address, created in (and bound to) the running loop."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return channel

    def stub(self, address: str) -> block_service_pb2_grpc.BlockServiceStub:
        """The block service at `address`, over the pooled channel."""
        return block_service_pb2_grpc.BlockServiceStub(self.channel(address))  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Closes every channel; the pool may be used again afterwards (new channels)."""
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


async def ping(pool: ChannelPool, address: str, timeout: float) -> float:
    """Round-trip seconds of a health check (the cheapest call a server answers).

    Raises the typed error (`PeerUnavailable` family) if the check fails.
    """
    stub = health_pb2_grpc.HealthStub(pool.channel(address))
    began = time.perf_counter()
    with rpc_errors(address, "ping"):
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return time.perf_counter() - began
