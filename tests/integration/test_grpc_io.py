"""Importing node or client sets gRPC's poller I/O before gRPC loads, and this grpcio knows
every experiment it names (an unknown one is an error line on stderr)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from swarm.settings import GRPC_EXPERIMENTS_ENV, POLLER_IO

SCRIPT = """
import asyncio, os, sys
import {module}
assert "grpc" in sys.modules, "the module did not load gRPC"
import grpc

async def serve_and_dial():
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        await asyncio.sleep(0)
    await server.stop(None)

asyncio.run(serve_and_dial())
print(os.environ.get("{env}"))
"""


@pytest.mark.parametrize("module", ["node.server", "client.grpc_transport"])
def test_importing_a_package_chooses_the_poller_io(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != GRPC_EXPERIMENTS_ENV}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(module=module, env=GRPC_EXPERIMENTS_ENV)],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == POLLER_IO
    assert "experiment" not in done.stderr.lower(), done.stderr
