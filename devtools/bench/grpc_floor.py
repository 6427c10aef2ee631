"""The pipe floor's workers joined by gRPC streams instead of pipes: what gRPC itself costs.

`scripts/bench local` splits the swarm's per-token cost against the pipe floor
(`devtools.bench.pipe_floor`). This second floor tells the part of that gap that the
transport alone costs from the part that is the swarm's own work. Its workers compute the
same block ranges with the same step code (`node.backend.run_step`, run on the event loop
as the servers run a decode step) but talk like the swarm's servers talk: a grpc.aio
server on uvloop in each worker, one long-lived bidirectional stream from each worker to
the next (as a session pushes), the last worker answering on a stream the client opened to
it, and the client driving them from a background event loop through the synchronous call
the model uses (`client.runtime.LoopThread`). What it leaves out is everything the swarm
adds on top: protobuf messages, validation, sessions and their queues, scheduling, copies
to the client, failover bookkeeping, the DHT. Frames are the pipe floor's (a 12-byte header
and raw float32 bytes), sent as they are (no serializer).

The worker entry point is `python -m devtools.bench.grpc_floor A:B MODEL NEXT` (NEXT: the
next worker's host:port, or - for the last); it prints its port on stdout and serves until
its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
import torch

from devtools.bench.pipe_floor import CHECKOUT, decode_through, decoding_through, pack_hidden, unpack_hidden
from devtools.bench.workloads import DecodeRun, GreedySteps
from swarm.model.head import ClientHead, load_client_head
from swarm.records import BlockRange
from swarm.rpc import CHANNEL_OPTIONS, SERVER_OPTIONS

logger = logging.getLogger(__name__)

METHOD = "/swarm.bench.GrpcFloor/Frames"
"""The workers' one method: a stream of frames each way (bytes, no protobuf)."""
SINK = b""
"""The first message of the stream a client opens to the last worker to read outputs from."""
STEP_TIMEOUT_S = 60.0


class _Worker:
    """One worker's state: its blocks, the session cache and where outputs go."""

    def __init__(self, span: BlockRange, model_path: str, next_address: str | None) -> None:
        from swarm.model.families import load_block_stack

        self.span = span
        self.stack = load_block_stack(model_path, span, "float32")
        self.cache = self.stack.new_cache(span)
        self.next_address = next_address
        self._next_call: Any = None
        self._next_channel: Any = None
        self.sink: asyncio.Queue[bytes] = asyncio.Queue()

    async def frames(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        """A step stream (frames in, nothing back) or the sink stream (outputs back)."""
        async for frame in requests:
            if frame == SINK:
                while True:
                    yield await self.sink.get()
            await self._step(frame)

    async def _step(self, frame: bytes) -> None:
        from node.backend import run_step

        start, hidden = unpack_hidden(frame)
        if start == 0:  # a new sequence
            self.cache = self.stack.new_cache(self.span)
        out = pack_hidden(start, run_step(self.stack, self.cache, self.span, hidden, start, None, None))
        if self.next_address is None:
            self.sink.put_nowait(out)
            return
        if self._next_call is None:
            self._next_channel = grpc.aio.insecure_channel(self.next_address, options=CHANNEL_OPTIONS)
            self._next_call = self._next_channel.stream_stream(METHOD)()
        await self._next_call.write(out)

    async def close(self) -> None:
        if self._next_call is not None:
            self._next_call.cancel()
            await self._next_channel.close()


async def _serve(span: BlockRange, model_path: str, next_address: str | None) -> None:
    worker = _Worker(span, model_path, next_address)
    server = grpc.aio.server(options=SERVER_OPTIONS)  # the servers' own options
    handler = grpc.method_handlers_generic_handler(
        METHOD.split("/")[1], {METHOD.split("/")[2]: grpc.stream_stream_rpc_method_handler(worker.frames)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    # stdin is the lifeline: it closes when the bench closes the floor (or dies)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    await worker.close()  # before the next worker stops (the floor stops them in chain order)
    await server.stop(None)


class GrpcFloor:
    """Greedy decoding through worker processes joined by gRPC streams (a `Decoder`)."""

    def __init__(self, model_path: str, spans: Sequence[BlockRange], env: Mapping[str, str],
                 head: ClientHead | None = None) -> None:
        """`env`: the workers' whole environment (see devtools.launcher.shared_cpu_env)."""
        from client.runtime import LoopThread

        self.head = head or load_client_head(model_path, "float32")
        self._workers: list[subprocess.Popen[bytes]] = []
        addresses: list[str] = []
        try:
            for span in reversed(spans):  # the last first: each worker is told the next one's port
                worker = subprocess.Popen(
                    [sys.executable, "-m", "devtools.bench.grpc_floor", str(span), model_path,
                     addresses[0] if addresses else "-"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env), cwd=CHECKOUT,
                )
                self._workers.insert(0, worker)
                assert worker.stdout is not None
                port = worker.stdout.readline().strip()
                if not port:
                    raise RuntimeError(f"a gRPC floor worker for blocks {span} exited ({worker.wait()}); "
                                       "see its stderr")
                addresses.insert(0, f"127.0.0.1:{int(port)}")
            self._loop = LoopThread()
            self._to_chain, self._from_chain = self._loop.run(self._open(addresses[0], addresses[-1]))
        except BaseException:
            self.close()
            raise

    async def _open(self, first: str, last: str) -> tuple[Any, Any]:
        self._channels = [grpc.aio.insecure_channel(first, options=CHANNEL_OPTIONS),
                          grpc.aio.insecure_channel(last, options=CHANNEL_OPTIONS)]
        to_chain = self._channels[0].stream_stream(METHOD)()
        from_chain = self._channels[1].stream_stream(METHOD)()
        await from_chain.write(SINK)
        return to_chain, from_chain

    async def _close_channels(self) -> None:
        for call in (getattr(self, "_to_chain", None), getattr(self, "_from_chain", None)):
            if call is not None:
                call.cancel()
        for channel in getattr(self, "_channels", ()):
            await channel.close()

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [worker.pid for worker in self._workers]

    @property
    def exit_codes(self) -> list[int | None]:
        """Each worker's exit code (None while it runs)."""
        return [worker.poll() for worker in self._workers]

    async def _round_trip(self, frame: bytes) -> bytes:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await self._to_chain.write(frame)
            answer = await self._from_chain.read()
        if answer is grpc.aio.EOF:
            raise RuntimeError(f"a gRPC floor worker ended its stream (exit codes {self.exit_codes})")
        return bytes(answer)

    def _through(self, start: int, hidden: torch.Tensor) -> torch.Tensor:
        return unpack_hidden(self._loop.run(self._round_trip(pack_hidden(start, hidden))))[1]

    def decode(self, prompt_ids: torch.Tensor, steps: int) -> DecodeRun:
        return decode_through(self.head, self._through, prompt_ids, steps)

    def decoding(self, prompt_ids: torch.Tensor, steps: int) -> GreedySteps:
        return decoding_through(self.head, self._through, prompt_ids, steps)

    def close(self) -> None:
        if hasattr(self, "_loop"):
            self._loop.run(self._close_channels())
            self._loop.stop()
        for worker in self._workers:  # in chain order: each one hangs up on the next before that one stops
            with contextlib.suppress(OSError):
                assert worker.stdin is not None
                worker.stdin.close()  # the lifeline: the worker stops serving and exits
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()


def main(argv: list[str] | None = None) -> int:
    import uvloop

    from swarm.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m devtools.bench.grpc_floor",
                                     description="a gRPC-floor worker: prints its port, serves until stdin closes")
    parser.add_argument("blocks", type=BlockRange.parse, metavar="A:B", help="blocks to run")
    parser.add_argument("model", help="checkpoint directory")
    parser.add_argument("next", help="the next worker's host:port, or - for the last")
    args = parser.parse_args(argv)
    setup_logging()
    uvloop.run(_serve(args.blocks, args.model, None if args.next == "-" else args.next))
    return 0


if __name__ == "__main__":
    sys.exit(main())
