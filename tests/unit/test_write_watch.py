"""`swarm.write_watch`: writes on gRPC streams time out without a timer per write."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from swarm.write_watch import WriteTimedOut, WriteWatch, WriteWatches

METHOD = "/test.Stall/Frames"
CHUNK = b"x" * (1 << 20)


async def _never_reads(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    await asyncio.sleep(30)  # holds the stream open and reads nothing: flow control stops the writer
    yield b""


async def _reads_all(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        pass
    yield b"done"


@contextlib.asynccontextmanager
async def _stream(handler: Any) -> AsyncIterator[Any]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Stall", {"Frames": grpc.stream_stream_rpc_method_handler(handler)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel.stream_stream(METHOD)()
    finally:
        await channel.close()
        await server.stop(None)


async def test_a_write_the_peer_does_not_take_times_out_and_the_writer_goes_on() -> None:
    watch = WriteWatch(0.4)
    async with _stream(_never_reads) as call:
        began = time.monotonic()
        with pytest.raises(WriteTimedOut, match="0.4 s"):
            for _ in range(64):  # windows and buffers fill after a few MB
                await watch.write(call, CHUNK)
        took = time.monotonic() - began
        assert 0.4 <= took < 0.4 * 1.25 + 0.3
        assert call.cancelled() and watch.in_flight == 0
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the writer's task goes on
        await asyncio.sleep(0)
    await watch.close()


async def test_writes_that_end_are_forgotten() -> None:
    watch = WriteWatch(1.0)  # wakes every 0.25 s
    async with _stream(_reads_all) as call:
        await watch.write(call, b"frame")
        task = watch._task
        assert watch.in_flight == 0 and task is not None
        for _ in range(30):  # a busy stream keeps the same watching task
            await asyncio.sleep(0.02)
            await watch.write(call, b"frame")
        assert watch._task is task and not task.done()
        await asyncio.sleep(0.7)  # a quiet spell: the watch woke, cancelled nothing and ended
        assert task.done()
        await watch.write(call, b"again")  # and watches again
        assert watch._task is not task
        await call.done_writing()
        assert await call.read() == b"done"
        assert not call.cancelled()
    await watch.close()


async def test_cancelling_the_writer_is_not_a_timeout() -> None:
    watch = WriteWatch(5.0)
    async with _stream(_never_reads) as call:
        async def write_forever() -> None:
            while True:
                await watch.write(call, CHUNK)

        writer = asyncio.create_task(write_forever())
        await asyncio.sleep(0.3)
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        assert watch.in_flight == 0
    await watch.close()


class _FakeTask:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> None:
        self.cancels += 1


def test_only_writes_past_the_timeout_are_cancelled_and_each_once() -> None:
    now = [100.0]
    watch = WriteWatch(2.0, clock=lambda: now[0])
    old, new = _FakeTask(), _FakeTask()
    watch._writes = {1: (old, 97.5), 2: (new, 99.0)}  # type: ignore[dict-item]  # (as `write` notes them)
    assert watch.expire_overdue() == 1 and (old.cancels, new.cancels) == (1, 0)
    assert watch.expire_overdue() == 0 and old.cancels == 1
    now[0] = 101.0
    assert watch.expire_overdue() == 1 and new.cancels == 1


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        WriteWatch(0.0)


async def test_one_watch_per_timeout() -> None:
    watches = WriteWatches()
    assert watches.watch(1.0) is watches.watch(1.0)
    assert watches.watch(2.0).timeout == 2.0
    await watches.close()
