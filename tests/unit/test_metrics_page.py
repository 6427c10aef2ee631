"""A server's metrics page: the families it exports and HTTP answers only at /metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from node.metrics import ServerMetrics, _answer


def _metrics() -> ServerMetrics:
    metrics = ServerMetrics()
    metrics.describe_server(lambda: {"model": "tiny", "blocks": "0:2", "version": "0.1.0", "server_id": "abc"})
    busy = {"inference": 1.5, "batch": 0.25}
    metrics.count_busy_seconds(lambda: dict(busy))
    metrics.cache_tokens_capacity.set(4096)
    metrics.batch_seconds.labels("forward").observe(0.02)
    return metrics


def test_families_and_types() -> None:
    families = {f.name: f for f in text_string_to_metric_families(_metrics().render().decode())}
    info = families["swarm_server_info"]  # an info metric reads as a gauge of 1 in the 0.0.4 text format
    assert info.samples[0].value == 1
    assert info.samples[0].labels == {"model": "tiny", "blocks": "0:2", "version": "0.1.0", "server_id": "abc"}
    busy = families["swarm_compute_busy_seconds"]
    assert busy.type == "counter"
    assert {s.labels["kind"]: s.value for s in busy.samples if s.name.endswith("_total")} == \
        {"inference": 1.5, "batch": 0.25}
    assert families["swarm_cache_tokens_capacity"].samples[0].value == 4096
    forward = [s for s in families["swarm_batch_seconds"].samples
               if s.name == "swarm_batch_seconds_count" and s.labels == {"kind": "forward"}]
    assert forward[0].value == 1
    assert "process_resident_memory_bytes" in families and "python_info" in families


def test_metrics_only_at_their_path() -> None:
    metrics = _metrics()
    ok = _answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", metrics)
    assert ok.startswith(b"HTTP/1.1 200 OK") and b"swarm_server_info{" in ok
    assert _answer(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", metrics).startswith(b"HTTP/1.1 200 OK")
    head = _answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", metrics)
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    for path in (b"/", b"/metricsx", b"/favicon.ico", b"/metrics/"):
        assert _answer(b"GET " + path + b" HTTP/1.1\r\n\r\n", metrics).startswith(b"HTTP/1.1 404 "), path
    assert _answer(b"POST /metrics HTTP/1.1\r\n\r\n", metrics).startswith(b"HTTP/1.1 405 ")
    assert _answer(b"garbage\r\n\r\n", metrics).startswith(b"HTTP/1.1 404 ")
