"""Prometheus metrics of a block server, served on `--metrics-port` (text format).

One registry per server (several servers can share a process in tests). The endpoint is
a few lines of asyncio, not prometheus_client's threaded HTTP server: one event loop,
no threads (DESIGN rule 4).
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)


class ServerMetrics:
    """Counters and gauges the servicer and sessions update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_open = Gauge("swarm_sessions_open", "Inference sessions open now", registry=self.registry)
        self.cache_tokens_free = Gauge("swarm_cache_tokens_free", "KV-cache tokens free", registry=self.registry)
        self.compute_busy_seconds = Gauge("swarm_compute_busy_seconds", "Compute thread's run time so far, "
                                          "by kind of work (inference or batch)", ["kind"], registry=self.registry)
        self.compute_queued = Gauge("swarm_compute_queued", "Tasks waiting for the compute thread",
                                    registry=self.registry)
        self.steps = Counter("swarm_inference_steps", "Inference steps served", registry=self.registry)
        self.step_tokens = Counter("swarm_inference_tokens", "Tokens through inference steps",
                                   registry=self.registry)
        self.step_seconds = Histogram("swarm_inference_step_seconds", "Compute time of one inference step",
                                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                                      registry=self.registry)
        self.batch_calls = Counter("swarm_batch_calls", "Forward and backward calls", ["kind"],
                                   registry=self.registry)
        self.pushes_failed = Counter("swarm_pushes_failed", "Pushes to the next server that failed",
                                     registry=self.registry)
        self.errors = Counter("swarm_errors", "Requests answered with an error status", ["code"],
                              registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: ServerMetrics, host: str, port: int, stop: asyncio.Event) -> None:
    """Answers every HTTP request on host:port with the metrics until `stop` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            body = metrics.render()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sends no request gets no answer
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    logger.info("metrics at http://%s:%d/metrics", host, server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
