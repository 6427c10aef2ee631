"""What the server is doing right now: lifecycle state and open sessions.

Shared by the servicer (which refuses new sessions unless ONLINE), the announcer (which
publishes it) and the shutdown path (which waits for open sessions to finish).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from swarm.errors import ServerDraining
from swarm.records import BlockRange, ServerState


@dataclass
class ServingState:
    """Mutable, single-event-loop state of one block server."""

    model_name: str
    blocks: BlockRange
    phase: ServerState = ServerState.JOINING
    active_sessions: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def check_accepting(self) -> None:
        if self.phase is not ServerState.ONLINE:
            raise ServerDraining(
                f"server is {self.phase.name.lower()} and takes no new sessions; try another server"
            )

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Counts an open session for the drain logic."""
        self.active_sessions += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.active_sessions -= 1
            if self.active_sessions == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Waits until no session is open; False if the timeout passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
