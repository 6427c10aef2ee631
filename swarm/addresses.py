"""`PeerAddress`: a DHT peer's "HOST:PORT", parsed once where it enters the program.

The command line (argparse `type=PeerAddress.parse`) and the public API
(`client.model.AutoDistributedModelForCausalLM.from_pretrained`) parse text; inside,
configs and `SwarmDHT.start` carry `PeerAddress` values only. Not here: resolving host
names (the DHT node does that when it joins) or gRPC addresses of block servers (those
travel as the "host:port" strings servers publish, checked by `swarm.codec.bodies`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class PeerAddress:
    """A host name or IP address and a UDP/TCP port in 1..65535."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host or not 0 < self.port < 65536:
            raise ValueError(f"expected a host and a port in 1..65535, got {self.host!r} and {self.port}")

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        """"HOST:PORT" (IPv6 as "[::1]:PORT"); raises ValueError saying what was expected."""
        host, sep, port = text.strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT with a port in 1..65535, got {text!r}")
        return cls(host, int(port))

    @classmethod
    def of(cls, value: PeerAddress | str) -> PeerAddress:
        """`value` itself, or parsed from text (for APIs that take either)."""
        return value if isinstance(value, PeerAddress) else cls.parse(value)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
