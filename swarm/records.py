"""Plain data describing servers and their blocks, shared by node/, client/ and the DHT.

These frozen dataclasses are what the code passes around; `swarm.codec` turns them into
protobuf and back. Signing and verification live in `swarm.identity`; DHT storage rules
in `swarm.dht`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MAX_NEXT_HOPS = 32
"""Most next-hop latencies a record carries (bounds the record's size)."""


class ServerState(enum.IntEnum):
    """Lifecycle of a block server (numbers match `swarm.v1.ServerState`)."""

    JOINING = 1
    ONLINE = 2
    DRAINING = 3
    OFFLINE = 4


@dataclass(frozen=True, order=True)
class BlockRange:
    """Half-open range [start, end) of transformer block indices."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid block range {self.start}:{self.end}")

    def __len__(self) -> int:
        return self.end - self.start

    def __contains__(self, block: object) -> bool:
        return isinstance(block, int) and self.start <= block < self.end

    def covers(self, other: BlockRange) -> bool:
        """True if `other` lies within this range."""
        return self.start <= other.start and other.end <= self.end

    def __str__(self) -> str:
        return f"{self.start}:{self.end}"

    @classmethod
    def parse(cls, text: str) -> BlockRange:
        """Parses "A:B" (as on the command line); the ValueError says what is wrong with it."""
        try:
            a, b = (int(part) for part in text.split(":"))
        except ValueError:
            raise ValueError(f"expected a block range START:END of block numbers (e.g. 0:10), "
                             f"got {text!r}") from None
        if a < 0:
            raise ValueError(f"{text} starts before block 0; blocks are numbered from 0")
        if b <= a:
            meant = f"{b}:{a}" if b < a else f"{a}:{a + 1}"
            raise ValueError(f"{text} holds no blocks: START:END means blocks START..END-1, so END must be "
                             f"greater than START (did you mean {meant}?)")
        return cls(a, b)


@dataclass(frozen=True)
class Throughput:
    """Measured speeds, tokens per second through ONE block."""

    inference_tokens_per_s: float = 0.0
    forward_tokens_per_s: float = 0.0
    network_tokens_per_s: float = 0.0


@dataclass(frozen=True)
class ServerRecord:
    """Everything a server publishes about itself (see protos/swarm/v1/record.proto)."""

    server_id: str
    address: str
    model: str
    blocks: BlockRange
    state: ServerState
    throughput: Throughput = field(default_factory=Throughput)
    free_cache_tokens: int = 0
    cache_tokens: int = 0
    dtype: str = "float32"
    quantization: str = "none"
    version: str = ""
    next_hop_rtt_ms: dict[str, float] = field(default_factory=dict)
    model_num_blocks: int = 0
    hidden_size: int = 0
    issued_at: float = 0.0
    expiration: float = 0.0
    adapters: tuple[str, ...] = ()
    """Names of the LoRA adapters the server applies on request (`--adapter NAME=DIR`)."""


@dataclass(frozen=True)
class BlockEntry:
    """The compact entry a server stores under each block key it covers."""

    server_id: str
    address: str
    blocks: BlockRange
    state: ServerState
    inference_tokens_per_s: float = 0.0
    forward_tokens_per_s: float = 0.0
    free_cache_tokens: int = 0
    issued_at: float = 0.0
    expiration: float = 0.0
    network_tokens_per_s: float = 0.0
    """0 when not measured, and in entries of servers older than this field."""

    @property
    def throughput(self) -> Throughput:
        """The speeds the entry states, as in the server's full record."""
        return Throughput(self.inference_tokens_per_s, self.forward_tokens_per_s, self.network_tokens_per_s)

    @classmethod
    def from_record(cls, record: ServerRecord) -> BlockEntry:
        return cls(
            server_id=record.server_id,
            address=record.address,
            blocks=record.blocks,
            state=record.state,
            inference_tokens_per_s=record.throughput.inference_tokens_per_s,
            forward_tokens_per_s=record.throughput.forward_tokens_per_s,
            network_tokens_per_s=record.throughput.network_tokens_per_s,
            free_cache_tokens=record.free_cache_tokens,
            issued_at=record.issued_at,
            expiration=record.expiration,
        )


@dataclass(frozen=True)
class ModelEntry:
    """What one server states about its model (stored under the model's index key)."""

    server_id: str
    model: str
    num_blocks: int
    hidden_size: int
    issued_at: float = 0.0
    expiration: float = 0.0
