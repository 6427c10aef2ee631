"""The server's published record, made in one place from what it is and what it measured.

    facts = ServerFacts(server_id, address, model, num_blocks, hidden_size, cache_tokens)
    measurements = Measurements(compute=get_throughput(...))       # after loading blocks
    measurements = measurements.with_links(prober.rtt_ms, prober.bytes_per_s, hidden_size)
    record = build_record(facts, state, measurements, free_cache_tokens, dtype)

`build_record` is pure: no clock, no I/O. The record it returns is not yet stamped:
`issued_at` and `expiration` are set by `SwarmDHT.stamp`, the one place that sets times
(strictly increasing, so two announcements in one clock tick are no replay). What
placement credits the server with is `node.placement.credited_throughput` of the
record's throughput, for itself and for its peers alike. Not here: measuring
(`node.throughput`, `node.next_hops`), publishing (`node.announcer`), signing
(`swarm.codec.entries`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import swarm
from node.state import ServingState
from swarm.records import ServerRecord, Throughput

HIDDEN_BYTES_PER_VALUE = 4
"""Hidden states travel as float32 between servers: 4 bytes per value."""


@dataclass(frozen=True)
class ServerFacts:
    """What stays the same while a server runs (its blocks and state do not)."""

    server_id: str
    address: str
    """The gRPC address clients dial, "host:port"."""
    model: str
    """The name the model is announced under."""
    model_num_blocks: int
    hidden_size: int
    cache_tokens: int
    """The KV-cache budget, tokens."""
    quantization: str = "none"
    version: str = swarm.__version__
    adapters: tuple[str, ...] = ()
    """Names of the LoRA adapters served (`--adapter`)."""


@dataclass(frozen=True)
class Measurements:
    """The latest figures the server measured about itself; replaced, never mutated."""

    compute: Throughput = field(default_factory=Throughput)
    """Inference and forward speed through one block (its network figure is ignored)."""
    network_tokens_per_s: float = 0.0
    """Hidden-state tokens/s the link to the closest next server carries; 0: unmeasured."""
    next_hop_rtt_ms: Mapping[str, float] = field(default_factory=dict)
    """Smoothed round trips to the servers of the block after ours, milliseconds."""

    @property
    def throughput(self) -> Throughput:
        """Compute and network figures together, as the record states them."""
        return replace(self.compute, network_tokens_per_s=self.network_tokens_per_s)

    def with_compute(self, compute: Throughput) -> Measurements:
        """These measurements after a (re-)measurement of the compute speed."""
        return replace(self, compute=compute)

    def with_links(self, rtt_ms: Mapping[str, float], bytes_per_s: float | None, hidden_size: int) -> Measurements:
        """These measurements after a next-hop probe; an unmeasured bandwidth keeps the old figure."""
        network = self.network_tokens_per_s
        if bytes_per_s is not None and hidden_size > 0:
            network = round(bytes_per_s / (hidden_size * HIDDEN_BYTES_PER_VALUE), 1)
        return replace(self, network_tokens_per_s=network, next_hop_rtt_ms=dict(rtt_ms))


def build_record(facts: ServerFacts, state: ServingState, measurements: Measurements,
                 free_cache_tokens: int, dtype: str) -> ServerRecord:
    """The record describing the server now; `issued_at`/`expiration` left 0 (see module doc)."""
    return ServerRecord(
        server_id=facts.server_id,
        address=facts.address,
        model=facts.model,
        blocks=state.blocks,
        state=state.phase,
        throughput=measurements.throughput,
        free_cache_tokens=free_cache_tokens,
        cache_tokens=facts.cache_tokens,
        dtype=dtype,
        quantization=facts.quantization,
        version=facts.version,
        next_hop_rtt_ms=dict(measurements.next_hop_rtt_ms),
        model_num_blocks=facts.model_num_blocks,
        hidden_size=facts.hidden_size,
        adapters=facts.adapters,
    )
