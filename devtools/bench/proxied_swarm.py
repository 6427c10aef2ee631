"""A loopback swarm whose every server sits behind its own delay proxy (`scripts/bench wan`).

Server i listens on a port picked for it and announces its proxy's address, so every hop,
client -> server and server -> server, crosses exactly one `DelayProxy`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

from client.runtime import LoopThread
from devtools.launcher import LocalSwarm, LocalSwarmConfig, LocalSwarmError
from devtools.netsim import DelayProxy
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
_SERVER_ARGS = ("--throughput", "100", "--drain-grace", "1")
"""No throughput probe at start; no long drain at the end (the bench's sessions are closed)."""
_START_ATTEMPTS = 3
"""Swarm starts tried: a picked free port may be taken before its server binds it."""


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class DelayLinks(contextlib.AbstractContextManager["DelayLinks"]):
    """One `DelayProxy` per server on its own event loop thread: proxy i listens on a
    port of its own and forwards to `targets[i]`. `set_delay` restarts the proxies on
    the same ports (open connections are dropped; gRPC channels reconnect on next use)."""

    def __init__(self, targets: Sequence[int], delay_s: float, rate_bytes_per_s: float | None = None) -> None:
        self.targets = tuple(targets)
        self.delay_s = delay_s
        self.rate_bytes_per_s = rate_bytes_per_s
        """Rate cap of each direction of each connection (None: none)."""
        self._loop = LoopThread()
        self._proxies: list[DelayProxy] = []

    @property
    def addresses(self) -> list[str]:
        return [p.address for p in self._proxies]

    def __enter__(self) -> DelayLinks:
        try:
            self._proxies = self._loop.run(self._start([0] * len(self.targets), self.delay_s))
        except BaseException:
            self._loop.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._loop.run(self._stop(), timeout=10)
        finally:
            self._loop.stop()

    def set_delay(self, delay_s: float) -> None:
        ports = [p.port for p in self._proxies]
        self._loop.run(self._stop())
        self._proxies = self._loop.run(self._start(ports, delay_s))
        self.delay_s = delay_s
        logger.info("proxies %s now delay %.1f ms each way", ", ".join(self.addresses), delay_s * 1e3)

    async def _start(self, ports: Sequence[int], delay_s: float) -> list[DelayProxy]:
        proxies = [DelayProxy(HOST, port, HOST, target, delay_s, self.rate_bytes_per_s)
                   for port, target in zip(ports, self.targets)]
        for proxy in proxies:
            await proxy.start()
        return proxies

    async def _stop(self) -> None:
        for proxy in self._proxies:
            await proxy.stop()


@contextlib.contextmanager
def proxied_swarm(model: str, spans: Sequence[BlockRange], delay_s: float, workdir: Path,
                  rate_bytes_per_s: float | None = None) -> Iterator[tuple[LocalSwarm, DelayLinks]]:
    """Servers of `spans` behind delay proxies; retries the start if a port was taken."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        with contextlib.ExitStack() as stack:
            ports = [free_port() for _ in spans]
            links = stack.enter_context(DelayLinks(ports, delay_s, rate_bytes_per_s))
            # server i listens on ports[i] and announces its proxy's address
            per_server = tuple(("--port", str(port), "--public-address", public)
                               for port, public in zip(ports, links.addresses))
            config = LocalSwarmConfig(model, tuple(spans), workdir=workdir / f"attempt-{attempt}",
                                      server_args=_SERVER_ARGS, per_server_args=per_server,
                                      env={"OMP_NUM_THREADS": "1"})
            swarm = LocalSwarm(config)
            try:
                swarm.start()
            except LocalSwarmError as error:
                if attempt == _START_ATTEMPTS:
                    raise
                logger.warning("swarm start failed (attempt %d, a port may have been taken): %s",
                               attempt, str(error).splitlines()[0])
                continue
            stack.callback(swarm.stop)
            yield swarm, links
            return
    raise AssertionError("unreachable")  # pragma: no cover
