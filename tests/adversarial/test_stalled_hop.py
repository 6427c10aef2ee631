"""A peer that stops reading: the pushing server gives up after --push-timeout, a client
after its step timeout.

A chained session's server pushes each output to the next server over one long-lived
stream. A next server that is frozen (or malicious) and never reads lets the first writes
land in the connection's buffers and flow-control windows, then blocks the next write
forever. The pusher (`node.push_client.PushClient`, with `swarm.write_watch`) must fail
that push after its timeout, so that the session reports `push_failed` and goes on. Here
the next server is a real `swarm-node` process stopped with SIGSTOP. The client's writes
of steps are timed out the same way (`client.grpc_transport`, the step timeout).
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest
import torch

from client.grpc_transport import GrpcTransport
from node.push_client import PushClient
from swarm.codec.tensors import DEFAULT_LIMITS
from swarm.errors import PeerTimedOut
from swarm.protocol import InferenceOpen, InferenceStep, PushedStep
from swarm.records import BlockRange
from tests.integration.conftest import start_swarm

PUSH_TIMEOUT = 1.0


async def test_pushes_to_a_frozen_next_server_fail_after_the_push_timeout(tmp_path: Path) -> None:
    running = start_swarm(tmp_path, "llama", ["0:6"])
    server = running.servers[0]
    pusher = PushClient(PUSH_TIMEOUT)
    # 4 MB a push, to a session the frozen server never gets to look up
    pushed = PushedStep("a-session", InferenceStep(0, torch.zeros(1, 1024, 1024), start_position=0), "secret")
    try:
        assert await pusher.ping(server.address) is not None  # the connection is up before the freeze
        os.kill(server.pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        began = loop.time()
        outcomes = []
        while loop.time() - began < 10 and all(outcomes):
            outcomes.append(await pusher.push("owner", server.address, pushed))
        took = loop.time() - began
        assert outcomes[-1] is False, outcomes  # the blocked push failed ...
        # ... after the timeout (writes before it went into buffers at once), within the watch's bound
        assert PUSH_TIMEOUT <= took < PUSH_TIMEOUT * 1.25 + 1.0, (took, outcomes)
        # the next push opens a new stream and fails the same way: the session is never held
        again = loop.time()
        assert await pusher.push("owner", server.address, pushed) is False
        assert loop.time() - again < PUSH_TIMEOUT * 1.25 + 1.0
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await pusher.close()
        running.swarm.stop_all()


async def test_a_clients_steps_to_a_frozen_server_fail_after_the_step_timeout(tmp_path: Path) -> None:
    running = start_swarm(tmp_path, "llama", ["0:6"])
    server = running.servers[0]
    transport = GrpcTransport(DEFAULT_LIMITS)
    open_ = InferenceOpen("tiny-llama", BlockRange(0, 6), 1, 4096, torch.float32, uuid.uuid4().hex, uuid.uuid4().hex)
    try:
        stream = await transport.open_inference(server.address, open_, 5.0)
        os.kill(server.pid, signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(PeerTimedOut, match="timed out"):
            for step_id in range(64):  # 4 MB each: buffers and windows fill after a few
                await stream.send(InferenceStep(step_id, torch.zeros(1, 1024, 1024)), PUSH_TIMEOUT)
        took = loop.time() - began
        assert PUSH_TIMEOUT <= took < PUSH_TIMEOUT * 1.25 + 1.0, took
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await transport.close()
        running.swarm.stop_all()
