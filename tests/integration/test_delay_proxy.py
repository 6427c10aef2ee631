"""DelayProxy on real sockets (127.0.0.1, port 0): delays, pipelining, rate cap, close
propagation, and a gRPC call through it. About 3 s in all."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devtools.netsim import DelayProxy
from tests.wait import async_wait_until


class EchoServer:
    """Echoes every byte back; records the connections it sees end."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.saw_eof = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            self.saw_eof.set()
        except OSError:
            pass  # the test closed its side abruptly; nothing to echo to
        finally:
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.stop()


async def _connect(proxy: DelayProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_round_trip_is_twice_the_one_way_delay(echo: EchoServer) -> None:
    async with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo.port, 0.020) as proxy:
        reader, writer = await _connect(proxy)
        rtts = []
        for _ in range(5):
            start = time.perf_counter()
            writer.write(b"x" * 64)
            await writer.drain()
            assert await reader.readexactly(64) == b"x" * 64
            rtts.append(time.perf_counter() - start)
        writer.close()
    assert min(rtts) >= 0.039
    assert statistics.median(rtts) < 0.060


async def test_pipelined_chunks_keep_their_spacing(echo: EchoServer) -> None:
    delay, gap, count = 0.050, 0.005, 10
    async with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo.port, delay) as proxy:
        reader, writer = await _connect(proxy)
        sent: list[float] = []
        received: list[float] = []

        async def receive() -> None:
            for i in range(count):
                assert await reader.readexactly(100) == bytes([i]) * 100
                received.append(time.perf_counter())

        async def send() -> None:
            for i in range(count):
                sent.append(time.perf_counter())
                writer.write(bytes([i]) * 100)
                await writer.drain()
                await asyncio.sleep(gap)

        async with asyncio.TaskGroup() as group:
            group.create_task(receive())
            group.create_task(send())
        writer.close()
    latencies = [r - s for r, s in zip(received, sent, strict=True)]
    assert min(latencies) >= 2 * delay - 0.001
    assert max(latencies) < 2 * delay + 0.060
    # Serialised delays would take count * 2 * delay = 1 s; pipelined ~0.15 s.
    assert received[-1] - sent[0] < 0.35


async def test_rate_cap_limits_throughput(echo: EchoServer) -> None:
    rate, size = 2e6, 400_000  # 0.2 s each way, the two directions overlapping
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    async with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo.port, 0.0, rate) as proxy:
        reader, writer = await _connect(proxy)
        start = time.perf_counter()
        writer.write(payload)
        assert await reader.readexactly(size) == payload
        elapsed = time.perf_counter() - start
        writer.close()
    assert size / rate * 0.9 <= elapsed <= size / rate * 1.8


async def test_small_buffer_pushes_back_without_losing_bytes(echo: EchoServer) -> None:
    size = 300_000
    payload = bytes(range(251)) * (size // 251 + 1)
    async with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo.port, 0.005, max_buffer_bytes=4096) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(payload)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 5.0) == payload
        writer.close()


async def test_client_close_reaches_the_server_after_the_delay(echo: EchoServer) -> None:
    async with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo.port, 0.030) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        start = time.perf_counter()
        writer.close()
        await asyncio.wait_for(echo.saw_eof.wait(), 1.0)
        assert time.perf_counter() - start >= 0.029
        # the echo server closes in turn; the proxy lets go of both
        await async_wait_until(lambda: proxy.active_connections == 0, 1.0, "the proxy drops both connections")


async def test_server_close_reaches_the_client(echo: EchoServer) -> None:
    async with DelayProxy("127.0.0.1", 0, "127.0.0.1", echo.port, 0.010) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        echo.writers[0].close()
        assert await asyncio.wait_for(reader.read(), 1.0) == b""
        writer.close()


async def test_stop_drops_open_connections(echo: EchoServer) -> None:
    proxy = DelayProxy("127.0.0.1", 0, "127.0.0.1", echo.port, 0.010)
    await proxy.start()
    reader, writer = await _connect(proxy)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    await asyncio.wait_for(proxy.stop(), 1.0)
    assert proxy.active_connections == 0
    try:
        assert await asyncio.wait_for(reader.read(), 1.0) == b""
    except ConnectionResetError:
        pass  # an abort may arrive as a reset: closed either way
    writer.close()


async def test_unreachable_target_closes_the_client() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with DelayProxy("127.0.0.1", 0, "127.0.0.1", dead_port, 0.0) as proxy:
        reader, writer = await _connect(proxy)
        try:
            assert await asyncio.wait_for(reader.read(), 1.0) == b""
        except ConnectionResetError:
            pass
        writer.close()


async def test_grpc_unary_call_through_the_proxy_pays_the_round_trip() -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with DelayProxy("127.0.0.1", 0, "127.0.0.1", port, 0.010) as proxy:
            options = [("grpc.enable_http_proxy", 0)]
            async with grpc.aio.insecure_channel(proxy.address, options=options) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service="")
                await stub.Check(request, timeout=5)  # connect + HTTP/2 settings exchange
                start = time.perf_counter()
                response = await stub.Check(request, timeout=5)
                elapsed = time.perf_counter() - start
    finally:
        await server.stop(None)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert 0.020 <= elapsed < 0.5
