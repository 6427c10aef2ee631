"""The one RPC module: gRPC options, the message cap, channels, pings, status <-> error.

Both sides use it: the block server for its server options and to answer an error with
a status (`status_for`), the client and a server's push client for their channels, the
health ping and to turn a failed call back into a typed error (`error_from_status`,
`rpc_errors`). `STATUS_TABLE` is the single mapping, read in both directions.

Private swarms (`swarm.security.RpcSecurity`): `ChannelPool(security)` dials over TLS
and adds the swarm token to every call's metadata (a channel-level interceptor, so call
sites do not change); `make_server(security)` refuses BlockService calls without the
token (`TokenCheck`: UNAUTHENTICATED; health checks and reflection stay open) and
`bind_server` serves TLS and turns a taken port into `PortInUse`.

Not here: the calls themselves (`client.grpc_transport`, `node.push_client`), the
servicer's decorator (`node.error_mapping`), anything that touches protobuf messages of
our own (`swarm.codec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
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
    Unauthenticated,
)
from swarm.security import TOKEN_METADATA_KEY, RpcSecurity, token_matches
from swarm.v1 import block_service_pb2_grpc

logger = logging.getLogger(__name__)

PUBLIC = RpcSecurity()
"""A public swarm: plaintext gRPC, no token."""

BLOCK_SERVICE_PREFIX = "/swarm.v1.BlockService/"
"""Method names the swarm token guards (health checks and reflection stay open)."""

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
    # clients ping every 10 s (CHANNEL_OPTIONS) to notice dead servers; gRPC's server default
    # allows a ping without data every 5 min only and answers repeated ones with GOAWAY
    # "too_many_pings": accept what our own clients send
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
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
    StatusRow(grpc.StatusCode.UNAUTHENTICATED, Unauthenticated, Unauthenticated),
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
    # (a timed-out write's call is done too, cancelled for it: its status says nothing more)
    if not isinstance(error, grpc.aio.AioRpcError | TimeoutError) and call.done():
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
    """One grpc.aio channel per address, created in (and bound to) the running loop.

    With `security`: TLS channels that verify servers against its CA, and its swarm token
    on every call.
    """

    def __init__(self, security: RpcSecurity = PUBLIC) -> None:
        self.security = security
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self.security)
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


def open_channel(address: str, security: RpcSecurity = PUBLIC) -> grpc.aio.Channel:
    """A channel to `address`: TLS if `security` has a CA, the token on every call if it has one."""
    interceptors = token_interceptors(security.swarm_token) if security.swarm_token is not None else None
    if security.tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=security.tls_ca)
        return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)


def with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    """`details` with the swarm token added to its metadata."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(TOKEN_METADATA_KEY, token)
    return details._replace(metadata=metadata)


class _UnaryUnaryToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # (grpc is untyped)
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(with_token(details, self._token), request)


class _UnaryStreamToken(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(with_token(details, self._token), request)


class _StreamUnaryToken(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(with_token(details, self._token), requests)


class _StreamStreamToken(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(with_token(details, self._token), requests)


def token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """The client interceptors that send `token` with every call: one per kind of call (a
    channel files each interceptor under the first kind it is an instance of)."""
    return [kind(token) for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)]


class TokenCheck(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # (grpc is untyped)
    """Refuses BlockService calls whose metadata lacks the swarm token (UNAUTHENTICATED).

    The comparison is constant-time; the answer says whether a token was missing or
    wrong, never what it should be. Other services (health, reflection) pass.
    """

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(BLOCK_SERVICE_PREFIX):
            return handler
        given = [v for k, v in details.invocation_metadata or () if k == TOKEN_METADATA_KEY]
        if len(given) == 1 and token_matches(self._token, given[0]):
            return handler
        reason = "this swarm requires a swarm token (--swarm-token or $SWARM_TOKEN)" if not given else \
            "wrong swarm token"
        logger.info("refused %s: %s", method, "no swarm token" if not given else "wrong swarm token")
        return _refusal(handler, reason)


def _refusal(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that ends the call with UNAUTHENTICATED."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def make_server(security: RpcSecurity = PUBLIC) -> grpc.aio.Server:
    """A gRPC server with our options that checks the swarm token if `security` has one."""
    interceptors = [TokenCheck(security.swarm_token)] if security.swarm_token is not None else None
    return grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)


class PortInUse(SwarmError):
    """A port to listen on is taken (or cannot be bound); said at start, before any work."""


def check_port(host: str, port: int, what: str, flag: str, udp: bool = False) -> None:
    """Raises `PortInUse` if `host:port` cannot be bound now (port 0 always can).

    Start-up calls it before loading anything, so that a taken port is one clear line
    within a second rather than a failure after the model loaded.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as probe:
        if not udp:  # as grpc does: a port left in TIME_WAIT is free, a listening one is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUse(_port_message(host, port, what, flag, error.errno)) from None


def _port_message(host: str, port: int, what: str, flag: str, code: int | None) -> str:
    if code == errno.EADDRINUSE:
        return f"{what} port {host}:{port} is in use (another server?); choose another {flag}"
    reason = errno.errorcode.get(code or 0, str(code))
    return f"{what} port {host}:{port} cannot be bound ({reason}); check --host and {flag}"


def bind_server(server: grpc.aio.Server, host: str, port: int, security: RpcSecurity = PUBLIC) -> int:
    """Binds `server` to host:port (TLS if `security` has a certificate); returns the port.

    Raises `PortInUse` when the port is taken (grpc only says "Failed to bind").
    """
    address = f"{host}:{port}"
    try:
        if security.tls_cert is not None and security.tls_key is not None:
            credentials = grpc.ssl_server_credentials([(security.tls_key, security.tls_cert)])
            return int(server.add_secure_port(address, credentials))
        return int(server.add_insecure_port(address))
    except RuntimeError:
        check_port(host, port, "gRPC", "--port")  # says "in use" if that is why
        raise PortInUse(f"gRPC port {address} cannot be bound; check --host and --port") from None
