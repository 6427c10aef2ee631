"""The floor of any multi-process split on this machine: block stacks joined by OS pipes.

`scripts/bench local` times the swarm against one local process. Part of the swarm's
cost is not the swarm's protocol at all but the split itself: several processes share
the cores, each one idles while the others compute, and a hidden state has to cross a
process boundary at every hop. This contender measures that part alone. It starts one
worker process per block range, chained like a shell pipeline (client -> w0 | w1 | w2 ->
client), each running the server's own step code (`node.backend.run_step`) on its
blocks; a hidden state crosses each pipe as a 12-byte header and raw float32 bytes. No
gRPC, no asyncio, no DHT, no validation, no fault tolerance: nothing a real swarm could
do without, so no swarm over these processes can be faster.

The worker entry point is `python -m devtools.bench.pipe_floor A:B MODEL` (stdin: steps,
stdout: outputs, stderr: logs).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import torch

from devtools.bench.workloads import DecodeRun, GreedySteps, run_through
from swarm.model.head import ClientHead, load_client_head
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<iii")
"""start position, tokens, hidden size (batch is always 1)."""


def pack_hidden(start: int, hidden: torch.Tensor) -> bytes:
    """One frame: the header, then [1, tokens, hidden] as raw float32 bytes."""
    data = hidden.detach().to(torch.float32).contiguous().numpy().tobytes()
    return _HEADER.pack(start, hidden.shape[1], hidden.shape[2]) + data


def unpack_hidden(frame: bytes) -> tuple[int, torch.Tensor]:
    """(start, [1, tokens, hidden]) of a whole frame."""
    start, tokens, hidden = _HEADER.unpack_from(frame)
    if len(frame) != _HEADER.size + tokens * hidden * 4:
        raise EOFError(f"frame of {len(frame)} bytes does not hold {tokens} x {hidden} floats")
    data = bytearray(frame[_HEADER.size:])
    return start, torch.frombuffer(data, dtype=torch.float32).view(1, tokens, hidden)


def write_hidden(stream: IO[bytes], start: int, hidden: torch.Tensor) -> None:
    stream.write(pack_hidden(start, hidden))
    stream.flush()


def read_hidden(stream: IO[bytes]) -> tuple[int, torch.Tensor] | None:
    """The next (start, [1, tokens, hidden]) or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    _, tokens, hidden = _HEADER.unpack(header)
    size = tokens * hidden * 4
    data = stream.read(size)
    if len(data) < size:
        raise EOFError(f"pipe closed inside a message ({len(data)} of {size} bytes)")
    return unpack_hidden(header + data)


def decode_through(head: ClientHead, through: Callable[[int, torch.Tensor], torch.Tensor],
                   prompt_ids: torch.Tensor, steps: int) -> DecodeRun:
    """Greedy decoding, timed like the other contenders, with `through(start, hidden)`
    running hidden states through a floor's workers."""
    return run_through(decoding_through(head, through, prompt_ids, steps))


def decoding_through(head: ClientHead, through: Callable[[int, torch.Tensor], torch.Tensor],
                     prompt_ids: torch.Tensor, steps: int) -> GreedySteps:
    """`decode_through` a timed piece at a time (see `devtools.bench.workloads.lockstep`)."""
    position = prompt_ids.shape[1]
    times: list[float] = []
    with torch.inference_mode():  # per piece: other decodings run between them
        began = time.perf_counter()
        hidden = through(0, head.embed(prompt_ids))
        token = head.logits(hidden[:, -1]).argmax(-1, keepdim=True)
        prefill = time.perf_counter() - began
    tokens = [int(token)]
    yield
    for _ in range(steps):
        with torch.inference_mode():
            began = time.perf_counter()
            hidden = through(position, head.embed(token))
            token = head.logits(hidden[:, -1]).argmax(-1, keepdim=True)
            times.append(time.perf_counter() - began)
        tokens.append(int(token))
        position += 1
        yield
    return DecodeRun(tuple(tokens), prefill, tuple(times))


CHECKOUT = Path(__file__).resolve().parents[2]
"""The repository root: devtools is importable there only (the wheel does not ship it)."""


class PipeFloor:
    """Greedy decoding through worker processes joined by pipes (a `Decoder`)."""

    def __init__(self, model_path: str, spans: Sequence[BlockRange], env: Mapping[str, str],
                 head: ClientHead | None = None) -> None:
        """`env`: the workers' whole environment (see devtools.launcher.shared_cpu_env)."""
        self.head = head or load_client_head(model_path, "float32")
        self._workers: list[subprocess.Popen[bytes]] = []
        previous = subprocess.PIPE
        for span in spans:
            worker = subprocess.Popen(
                [sys.executable, "-m", "devtools.bench.pipe_floor", str(span), model_path],
                stdin=previous, stdout=subprocess.PIPE, env=dict(env), cwd=CHECKOUT,
            )
            if self._workers:
                assert self._workers[-1].stdout is not None
                self._workers[-1].stdout.close()  # now owned by the new worker only
            previous = worker.stdout  # type: ignore[assignment]
            self._workers.append(worker)
        assert self._workers[0].stdin is not None and self._workers[-1].stdout is not None
        self._to_chain: IO[bytes] = self._workers[0].stdin
        self._from_chain: IO[bytes] = self._workers[-1].stdout

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return [worker.pid for worker in self._workers]

    @property
    def exit_codes(self) -> list[int | None]:
        """Each worker's exit code (None while it runs)."""
        return [worker.poll() for worker in self._workers]

    def _through(self, start: int, hidden: torch.Tensor) -> torch.Tensor:
        write_hidden(self._to_chain, start, hidden)
        answer = read_hidden(self._from_chain)
        if answer is None:
            raise RuntimeError(f"a pipe-floor worker exited (exit codes {self.exit_codes}); see its stderr")
        return answer[1]

    def decode(self, prompt_ids: torch.Tensor, steps: int) -> DecodeRun:
        return decode_through(self.head, self._through, prompt_ids, steps)

    def decoding(self, prompt_ids: torch.Tensor, steps: int) -> GreedySteps:
        return decoding_through(self.head, self._through, prompt_ids, steps)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._to_chain.close()  # each worker ends at the end of its input
        for worker in self._workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        with contextlib.suppress(OSError):
            self._from_chain.close()


def serve(span: BlockRange, model_path: str, inbound: IO[bytes], outbound: IO[bytes]) -> None:
    """Worker loop: a fresh cache at every start-0 step, one output per input."""
    from node.backend import run_step
    from swarm.model.families import load_block_stack

    stack = load_block_stack(model_path, span, "float32")
    cache = stack.new_cache(span)
    while (message := read_hidden(inbound)) is not None:
        start, hidden = message
        if start == 0:
            cache = stack.new_cache(span)
        write_hidden(outbound, start, run_step(stack, cache, span, hidden, start, None, None))


def main(argv: list[str] | None = None) -> int:
    from swarm.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m devtools.bench.pipe_floor",
                                     description="a pipe-floor worker: steps on stdin, outputs on stdout")
    parser.add_argument("blocks", type=BlockRange.parse, metavar="A:B", help="blocks to run")
    parser.add_argument("model", help="checkpoint directory")
    args = parser.parse_args(argv)
    setup_logging()
    # the output pipe carries only frames: anything else printing to stdout goes to stderr
    outbound = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(BrokenPipeError):
        serve(args.blocks, args.model, sys.stdin.buffer, outbound)
    return 0


if __name__ == "__main__":
    sys.exit(main())
