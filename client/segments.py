"""A live segment of a session's route: a server's open stream and the task that reads it.

(`client.routing.Segment` is the plan, a server and its blocks; `SegmentStream` is that
plan opened: a session on the server, read in the background.)

Each segment's results are read by its own task and posted, in stream order, to the
session's event queue, so that a step can finish as soon as the LAST server answers
while the other servers' copies (kept for replay) arrive in the background. That is what
makes a chained step cost servers + 1 one-way trips: waiting for each middle server's
answer in turn would add a round trip per token.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from client.transport import InferenceStream
from swarm.errors import SwarmError
from swarm.protocol import InferenceResult, NextHop
from swarm.records import BlockRange


@dataclass(eq=False)
class SegmentStream:
    """A server computing `blocks` for the session, over its own open stream."""

    server_id: str
    blocks: BlockRange
    stream: InferenceStream
    session_id: str
    """Unique per segment: one server may hold two segments of a route."""
    push_capability: str = ""
    """The secret a push into this segment's session must carry; only the previous hop learns it."""
    _reader: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def hop(self) -> NextHop:
        return NextHop(self.stream.address, self.session_id, self.push_capability)

    def start_reader(self, events: asyncio.Queue[SegmentEvent]) -> None:
        """Posts every result (or the stream's error, then stops) to `events`."""

        async def read() -> None:
            try:
                while True:
                    await events.put((self, await self.stream.next_result()))
            except SwarmError as error:
                await events.put((self, error))

        # owned by this segment: stop() cancels and awaits it
        self._reader = asyncio.create_task(read(), name=f"segment-{self.session_id}")

    async def stop(self) -> None:
        """Stops reading and cancels the stream (for a failed or replaced segment)."""
        await self._stop_reader()
        self.stream.abort()

    async def close(self, timeout: float) -> None:
        """Stops reading and closes the stream politely (end of session)."""
        await self._stop_reader()
        await self.stream.close(timeout)

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None


SegmentEvent = tuple[SegmentStream, InferenceResult | SwarmError]
"""A result read from a segment's stream, or the error that ended it."""
