"""Server-to-server pushes for chained inference: hand a step's output to the next server.

A failed or slow push is not the session's failure: it is logged and reported to the
client (`push_failed`), which then relays the output itself.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from swarm.codec import messages
from swarm.protocol import PushedStep
from swarm.v1 import block_service_pb2_grpc

logger = logging.getLogger(__name__)

_OPTIONS = (
    ("grpc.max_send_message_length", 512 << 20),
    ("grpc.max_receive_message_length", 512 << 20),
    ("grpc.enable_retries", 0),
)


class PushClient:
    """One channel per next-hop address; pushes with a timeout."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._stubs: dict[str, block_service_pb2_grpc.BlockServiceStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _stub(self, address: str) -> block_service_pb2_grpc.BlockServiceStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
            self._channels.append(channel)
            stub = self._stubs[address] = block_service_pb2_grpc.BlockServiceStub(channel)
        return stub

    async def push(self, address: str, pushed: PushedStep) -> bool:
        """True if the next server queued the step."""
        try:
            await self._stub(address).Push(messages.encode_push(pushed), timeout=self.timeout)
        except (grpc.aio.AioRpcError, asyncio.TimeoutError) as error:
            logger.warning("push of step %d to %s (session %s) failed: %s", pushed.step.step_id, address,
                           pushed.session_id, error)
            return False
        return True

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
