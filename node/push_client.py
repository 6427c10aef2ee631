"""Server-to-server calls: pushes for chained inference, pings of next-hop servers.

A session's pushes to one next session travel over one long-lived `PushStream` call,
opened at the first push and closed when the pushing session ends: a step costs one
message on an open HTTP/2 stream instead of a new call and its answer, which matters on
the per-token path. A failed or slow push is not the session's failure: it is logged and
reported to the client (`push_failed`), which then relays the output itself. A push the
next server rejects after the write (its session is gone) surfaces on the client's own
stream to that server, which fails over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swarm.codec import messages
from swarm.protocol import PushedStep
from swarm.v1 import block_service_pb2_grpc

logger = logging.getLogger(__name__)

PROBE_BYTES = 1 << 20
"""Payload of one bandwidth probe: large enough that transfer time dominates on fast links."""

_OPTIONS = (
    ("grpc.max_send_message_length", 512 << 20),
    ("grpc.max_receive_message_length", 512 << 20),
    ("grpc.enable_retries", 0),
)


class PushClient:
    """One channel per next-hop address, one push stream per (pushing, pushed) session pair."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._streams: dict[str, dict[tuple[str, str], Any]] = {}
        """Open PushStream calls by pushing session, then by (address, pushed session)."""

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address, options=_OPTIONS)
        return channel

    def _stub(self, address: str) -> block_service_pb2_grpc.BlockServiceStub:
        return block_service_pb2_grpc.BlockServiceStub(self._channel(address))  # type: ignore[no-untyped-call]

    async def ping(self, address: str) -> float | None:
        """Round-trip seconds of a health check to `address`; None if it failed."""
        stub = health_pb2_grpc.HealthStub(self._channel(address))
        began = time.perf_counter()
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout)
        except (grpc.aio.AioRpcError, asyncio.TimeoutError) as error:
            logger.debug("ping of %s failed: %s", address, error)
            return None
        return time.perf_counter() - began

    async def bandwidth(self, address: str, size: int = PROBE_BYTES) -> float | None:
        """Bytes per second this server sends to `address` (a timed payload less one RTT)."""
        rtt = await self.ping(address)
        if rtt is None:
            return None
        began = time.perf_counter()
        try:
            await self._stub(address).Probe(messages.probe_request(size), timeout=self.timeout)
        except (grpc.aio.AioRpcError, asyncio.TimeoutError) as error:
            logger.debug("bandwidth probe of %s failed: %s", address, error)
            return None
        return size / max(time.perf_counter() - began - rtt, 1e-6)

    async def push(self, owner: str, address: str, pushed: PushedStep) -> bool:
        """True if the step was written to the next server (session `owner` pushes it)."""
        streams = self._streams.setdefault(owner, {})
        key = (address, pushed.session_id)
        call = streams.get(key)
        if call is None:
            call = streams[key] = self._stub(address).PushStream()
        try:
            await asyncio.wait_for(call.write(messages.encode_push(pushed)), self.timeout)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, TimeoutError) as error:
            streams.pop(key, None)
            logger.warning("push of step %d to %s (session %s) failed: %s", pushed.step.step_id, address,
                           pushed.session_id, await _describe(call, error))
            call.cancel()
            return False
        return True

    async def release(self, owner: str) -> None:
        """Ends the push streams of session `owner` (it ended)."""
        calls = self._streams.pop(owner, {})
        await asyncio.gather(*(self._end(call) for call in calls.values()))

    async def _end(self, call: Any) -> None:
        try:
            await asyncio.wait_for(call.done_writing(), self.timeout)
            await asyncio.wait_for(call, self.timeout)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, TimeoutError) as error:
            # e.g. the next server dropped the session first: nothing is lost here
            logger.debug("push stream ended with %s", await _describe(call, error))
            call.cancel()

    async def close(self) -> None:
        await asyncio.gather(*(self.release(owner) for owner in list(self._streams)))
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


async def _describe(call: Any, error: BaseException) -> str:
    """The call's status if it has ended with one, else the error itself."""
    if isinstance(error, grpc.aio.AioRpcError) or not call.done():
        return f"{type(error).__name__}: {error}"
    return f"{(await call.code()).name}: {await call.details()}"
