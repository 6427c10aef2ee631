"""The gateway's Prometheus metrics, served at /metrics on its HTTP port.

One registry per gateway (not prometheus_client's global one), so tests can run
several gateways in one process and the page shows only the gateway's own series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a swarm's first token costs the prompt's pass through every server."""


class GatewayMetrics:
    """Requests by API and status, tokens in and out, time to first token, in flight."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the `_created` series double the page for no use (FACTS.md)
        self.registry = CollectorRegistry()
        self.requests = Counter("swarm_gateway_requests", "Generation requests answered, by API and status",
                                ["api", "status"], registry=self.registry)
        self.tokens = Counter("swarm_gateway_tokens", "Tokens processed: prompt (in) and completion (out)",
                              ["kind"], registry=self.registry)
        self.time_to_first_token = Histogram(
            "swarm_gateway_time_to_first_token_seconds", "From accepting a request to its first generated token",
            ["api"], buckets=TTFT_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("swarm_gateway_requests_in_flight", "Generation requests being served",
                               registry=self.registry)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
