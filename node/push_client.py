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

from swarm.codec import messages
from swarm.errors import RemoteError
from swarm.protocol import PushedStep
from swarm.rpc import CALL_FAILURES, PUBLIC, ChannelPool, call_failure, ping, rpc_errors
from swarm.security import RpcSecurity
from swarm.write_watch import WriteWatch

logger = logging.getLogger(__name__)

PROBE_BYTES = 1 << 20
"""Payload of one bandwidth probe: large enough that transfer time dominates on fast links."""


class PushClient:
    """One channel per next-hop address, one push stream per (pushing, pushed) session pair."""

    def __init__(self, timeout: float, security: RpcSecurity = PUBLIC) -> None:
        self.timeout = timeout
        self._pool = ChannelPool(security)
        """TLS to peers and the swarm token as `security` says (a private swarm)."""
        self._streams: dict[str, dict[tuple[str, str], Any]] = {}
        """Open PushStream calls by pushing session, then by (address, pushed session)."""
        self._writes = WriteWatch(timeout)
        """A push not written within `timeout` fails (a next server that stopped reading)."""

    async def ping(self, address: str) -> float | None:
        """Round-trip seconds of a health check to `address`; None if it failed."""
        try:
            return await ping(self._pool, address, self.timeout)
        except RemoteError as error:
            logger.debug("ping of %s failed: %s", address, error)
            return None

    async def bandwidth(self, address: str, size: int = PROBE_BYTES) -> float | None:
        """Bytes per second this server sends to `address` (a timed payload less one RTT)."""
        rtt = await self.ping(address)
        if rtt is None:
            return None
        began = time.perf_counter()
        try:
            with rpc_errors(address, "bandwidth probe"):
                await self._pool.stub(address).Probe(messages.probe_request(size), timeout=self.timeout)
        except RemoteError as error:
            logger.debug("bandwidth probe of %s failed: %s", address, error)
            return None
        return size / max(time.perf_counter() - began - rtt, 1e-6)

    async def push(self, owner: str, address: str, pushed: PushedStep) -> bool:
        """True if the step was written to the next server (session `owner` pushes it)."""
        streams = self._streams.setdefault(owner, {})
        key = (address, pushed.session_id)
        call = streams.get(key)
        if call is None:
            call = streams[key] = self._pool.stub(address).PushStream()
        try:  # (no timer per push: the watch times writes out, see swarm.write_watch)
            await self._writes.write(call, messages.encode_push(pushed))
        except CALL_FAILURES as error:
            streams.pop(key, None)
            logger.warning("push of step %d to %s (session %s) failed: %s", pushed.step.step_id, address,
                           pushed.session_id, await call_failure(call, error, address, "push"))
            call.cancel()
            return False
        return True

    async def release(self, owner: str) -> None:
        """Ends the push streams of session `owner` (it ended)."""
        calls = self._streams.pop(owner, {})
        await asyncio.gather(*(self._end(address, call) for (address, _), call in calls.items()))

    async def _end(self, address: str, call: Any) -> None:
        try:
            await asyncio.wait_for(call.done_writing(), self.timeout)
            await asyncio.wait_for(call, self.timeout)
        except CALL_FAILURES as error:
            # e.g. the next server dropped the session first: nothing is lost here
            logger.debug("push stream to %s ended with %s", address, await call_failure(call, error, address, "push"))
            call.cancel()

    async def close(self) -> None:
        await asyncio.gather(*(self.release(owner) for owner in list(self._streams)))
        await self._writes.close()
        await self._pool.close()

