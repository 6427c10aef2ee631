"""A TCP forwarder that makes a loopback link look like a WAN link.

`DelayProxy` listens on one address and forwards every connection to one target. Each
direction of each connection is a `_Pipe`: a receive task stamps every chunk with its
delivery time (`LinkShaper`: arrival + one-way delay, after an optional rate cap) and
queues it; a deliver task writes the chunks, in order, when they fall due. Delays are
therefore not serialised: a stream of chunks keeps its spacing, each one late by the
delay. End of stream travels the same way (a FIN arrives one delay after it was sent),
so closing either side closes the other.

It moves bytes only and knows nothing of HTTP/2 or gRPC. It does not delay the TCP
handshake itself (a new connection costs no extra round trip), lose or reorder packets,
or model jitter. Servers of a simulated swarm announce the proxy's address, not theirs.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

from devtools.netsim.shaping import LinkShaper

logger = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024
_DEFAULT_MAX_BUFFER = 16 * 1024 * 1024
_CLOSE_TIMEOUT_S = 1.0

# A queued chunk: (delivery time on the loop clock, bytes); None bytes mark end of stream.
_Item = tuple[float, bytes | None]


class _Pipe:
    """One direction of one proxied connection."""

    def __init__(
        self,
        name: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        shaper: LinkShaper,
        max_buffer_bytes: int,
    ) -> None:
        self._name = name
        self._reader = reader
        self._writer = writer
        self._shaper = shaper
        self._max_buffer = max_buffer_bytes
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._buffered = 0
        # Set while there is room in the queue. Stopping to read when the queue is full
        # lets TCP flow control push back on the sender, as a real link's window would.
        self._room = asyncio.Event()
        self._room.set()
        self._peer_reset = False

    async def run(self) -> None:
        """Forwards until end of stream has been delivered; raises OSError if the
        receiving side goes away."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._receive())
            group.create_task(self._deliver())

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        piece_size = self._shaper.max_chunk(_READ_SIZE)
        try:
            while True:
                while self._buffered >= self._max_buffer:
                    self._room.clear()
                    await self._room.wait()
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                arrival = loop.time()
                for start in range(0, len(data), piece_size):
                    piece = data[start : start + piece_size]
                    self._queue.put_nowait((self._shaper.delivery_time(len(piece), arrival), piece))
                    self._buffered += len(piece)
        except OSError as error:
            # The sender reset the connection: deliver what it had sent, then close.
            logger.debug("%s: sender reset (%s)", self._name, error)
            self._peer_reset = True
        self._queue.put_nowait((loop.time() + self._shaper.one_way_delay_s, None))

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deliver_at, piece = await self._queue.get()
            wait = deliver_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if piece is None:
                self._forward_end()
                return
            self._writer.write(piece)
            self._buffered -= len(piece)
            if self._buffered < self._max_buffer:
                self._room.set()
            await self._writer.drain()

    def _forward_end(self) -> None:
        """Passes end of stream on: a half-close if possible, so the other direction
        can still finish (TCP semantics); a full close after a reset."""
        if not self._peer_reset and self._writer.can_write_eof():
            self._writer.write_eof()
        else:
            self._writer.close()


class DelayProxy:
    """Forwards TCP connections from a listen address to a target, adding a one-way
    delay (and optionally a rate cap) in each direction.

    Use `async with DelayProxy(...) as proxy:`, or `await start()` / `await stop()`, or
    run it as a supervised task with `await proxy.run()`.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        target_host: str,
        target_port: int,
        one_way_delay_s: float,
        rate_bytes_per_s: float | None = None,
        *,
        max_buffer_bytes: int = _DEFAULT_MAX_BUFFER,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """`listen_port` 0 picks a free port (read `.port` after start). `rate_bytes_per_s`
        caps each direction of each connection separately. `max_buffer_bytes` bounds the
        bytes held per direction, which caps throughput at max_buffer / delay (16 MiB
        over 20 ms: 800 MB/s). `connect_timeout_s` bounds the connect to the target."""
        if one_way_delay_s < 0:
            raise ValueError(f"one_way_delay_s must be >= 0, got {one_way_delay_s}")
        if rate_bytes_per_s is not None and rate_bytes_per_s <= 0:
            raise ValueError(f"rate_bytes_per_s must be positive, got {rate_bytes_per_s}")
        self.listen_host = listen_host
        self.target_host = target_host
        self.target_port = target_port
        self.one_way_delay_s = one_way_delay_s
        self.rate_bytes_per_s = rate_bytes_per_s
        self._listen_port = listen_port
        self._max_buffer = max_buffer_bytes
        self._connect_timeout_s = connect_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._label = f"{listen_host}:{listen_port}->{target_host}:{target_port}"  # for logs

    @property
    def port(self) -> int:
        """The port actually listened on; only valid after `start()`."""
        if self._server is None:
            raise RuntimeError("DelayProxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        """"host:port" to announce instead of the target's address."""
        return f"{self.listen_host}:{self.port}"

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("DelayProxy is already started")
        self._server = await asyncio.start_server(self._serve, self.listen_host, self._listen_port)
        self._label = f"{self.listen_host}:{self.port}->{self.target_host}:{self.target_port}"
        logger.info(
            "delay proxy %s: one-way delay %.1f ms, rate %s",
            self._label, self.one_way_delay_s * 1e3,
            "unlimited" if self.rate_bytes_per_s is None else f"{self.rate_bytes_per_s:.0f} B/s",
        )

    async def stop(self) -> None:
        """Stops listening and drops every open connection, waiting for their tasks."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        logger.info("delay proxy %s stopped", self._label)

    async def run(self) -> None:
        """Serves until cancelled, then stops: for starting in a TaskGroup."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """One client connection, from accept to close (asyncio runs it as a task; it
        registers itself so that `stop()` can cancel and await it)."""
        task = asyncio.current_task()
        if task is None:  # unreachable: asyncio.start_server runs each handler in a task
            raise RuntimeError("connection handler outside a task")
        self._connections.add(task)
        peer = client_writer.get_extra_info("peername")
        try:
            await self._forward(peer, client_reader, client_writer)
        except asyncio.CancelledError:
            # Only stop() or loop shutdown cancels us, and nothing awaits our result. Ending
            # normally spares Python 3.11's stream callback, which calls task.exception()
            # on a cancelled handler and logs a spurious "Exception in callback".
            pass
        finally:
            self._connections.discard(task)

    async def _forward(
        self, peer: object, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), self._connect_timeout_s
            )
        except (OSError, TimeoutError) as error:
            logger.warning("delay proxy %s: cannot reach the target for %s: %s", self._label, peer, error)
            await _close(client_writer, abort=True)
            return
        logger.debug("delay proxy %s: %s connected", self._label, peer)
        aborted = True
        try:
            async with asyncio.TaskGroup() as group:
                for name, reader, writer in (
                    (f"{peer}->target", client_reader, upstream_writer),
                    (f"target->{peer}", upstream_reader, client_writer),
                ):
                    shaper = LinkShaper(self.one_way_delay_s, self.rate_bytes_per_s)
                    group.create_task(_Pipe(name, reader, writer, shaper, self._max_buffer).run())
            aborted = False
        except* OSError as errors:
            logger.debug("delay proxy %s: %s dropped: %s", self._label, peer, errors.exceptions)
        finally:
            await _close(client_writer, abort=aborted)
            await _close(upstream_writer, abort=aborted)
            logger.debug("delay proxy %s: %s closed", self._label, peer)


async def _close(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    """Closes one side; abort (RST, buffered bytes dropped) after an error or a cancel."""
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT_S)
    except (OSError, TimeoutError):
        pass  # the socket is gone either way; nothing left to release
