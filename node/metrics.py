"""Prometheus metrics of a block server, served on `--metrics-port` at /metrics (text format).

One registry per server (several servers can share a process in tests), with the
process's own figures (CPU seconds, resident memory, open files: prometheus_client's
process and platform collectors). The endpoint is a few lines of asyncio, not
prometheus_client's threaded HTTP server: one event loop, no threads (DESIGN rule 4).
It answers GET /metrics only; any other path is 404, any other method 405.

What is live (who serves what, compute time so far) is read at scrape time through
functions the server hands over (`describe_server`, `count_busy_seconds`), so that a
migration or the compute thread never has to remember to update a metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _LiveCollector(Collector):
    """`swarm_server_info` and `swarm_compute_busy_seconds_total`, read when scraped."""

    def __init__(self) -> None:
        self.server: Callable[[], dict[str, str]] | None = None
        self.busy: Callable[[], dict[str, float]] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.server is not None:
            yield InfoMetricFamily("swarm_server", "The server: model, blocks served now, swarm-llm version, id",
                                   value=self.server())
        if self.busy is not None:
            busy = CounterMetricFamily("swarm_compute_busy_seconds", "Compute thread's run time so far, by kind "
                                       "of work (inference steps or batch Forward/Backward)", labels=["kind"])
            for kind, seconds in sorted(self.busy().items()):
                busy.add_metric([kind], seconds)
            yield busy


class ServerMetrics:
    """Counters and gauges the servicer and sessions update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._live = _LiveCollector()
        self.registry.register(self._live)
        self.sessions_open = Gauge("swarm_sessions_open", "Inference sessions open now", registry=self.registry)
        self.cache_tokens_free = Gauge("swarm_cache_tokens_free", "KV-cache tokens free", registry=self.registry)
        self.cache_tokens_capacity = Gauge("swarm_cache_tokens_capacity", "KV-cache budget, tokens (all sessions "
                                           "together)", registry=self.registry)
        self.compute_queued = Gauge("swarm_compute_queued", "Tasks waiting for the compute thread",
                                    registry=self.registry)
        self.steps = Counter("swarm_inference_steps", "Inference steps served", registry=self.registry)
        self.step_tokens = Counter("swarm_inference_tokens", "Tokens through inference steps",
                                   registry=self.registry)
        self.step_seconds = Histogram("swarm_inference_step_seconds", "Compute time of one inference step",
                                      buckets=_STEP_BUCKETS, registry=self.registry)
        self.batch_calls = Counter("swarm_batch_calls", "Forward and backward calls", ["kind"],
                                   registry=self.registry)
        self.batch_seconds = Histogram("swarm_batch_seconds", "Latency of Forward and Backward calls, from the "
                                       "request to the answer", ["kind"], buckets=_BATCH_BUCKETS,
                                       registry=self.registry)
        self.training_graphs = Counter("swarm_training_graphs", "Training passes' graphs: kept by a Forward, "
                                       "reused by its Backward, or recomputed by a Backward that had none",
                                       ["outcome"], registry=self.registry)
        self.training_graph_bytes = Gauge("swarm_training_graph_bytes", "Bytes of autograd graphs kept for "
                                          "Backward calls", registry=self.registry)
        self.pushes_failed = Counter("swarm_pushes_failed", "Pushes to the next server that failed",
                                     registry=self.registry)
        self.errors = Counter("swarm_errors", "Requests answered with an error status", ["code"],
                              registry=self.registry)

    def describe_server(self, describe: Callable[[], dict[str, str]]) -> None:
        """`describe()` gives swarm_server_info's labels: model, blocks ("A:B"), version, server_id."""
        self._live.server = describe

    def count_busy_seconds(self, busy: Callable[[], dict[str, float]]) -> None:
        """`busy()` gives the compute thread's run time so far by kind (only ever grows)."""
        self._live.busy = busy

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: ServerMetrics, host: str, port: int, stop: asyncio.Event) -> None:
    """Answers GET /metrics on host:port with the metrics until `stop` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            writer.write(_answer(head, metrics))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sends no request gets no answer
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    logger.info("metrics at http://%s:%d/metrics", host, server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


def _answer(head: bytes, metrics: ServerMetrics) -> bytes:
    """The HTTP response to a request whose head (request line and headers) is `head`."""
    method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if path != b"/metrics":
        return _response(b"404 Not Found", b"text/plain", b"not found: metrics are at /metrics\n")
    if method not in (b"GET", b"HEAD"):
        return _response(b"405 Method Not Allowed", b"text/plain", b"GET /metrics\n", b"Allow: GET, HEAD\r\n")
    body = metrics.render()
    return _response(b"200 OK", b"text/plain; version=0.0.4; charset=utf-8", body if method == b"GET" else b"",
                     length=len(body))


def _response(status: bytes, content_type: bytes, body: bytes, extra: bytes = b"", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
            % (status, content_type, size, extra) + body)
