"""What the client needs from the network: the `Transport` and `InferenceStream` protocols.

Sessions (`client.inference_session`) and `client.remote_sequential` talk to servers only
through these; `client.grpc_transport.GrpcTransport` is the real one (built by
`SwarmClient`), tests pass an in-memory fake. Every method raises errors of the
`swarm.errors` tree only: `RemoteInvalidInput` for a request a server rejects as
malformed, the `PeerUnavailable` family for anything another server might do better.

No grpc, no sockets here: protocols only.
"""

from __future__ import annotations

from typing import Protocol

import torch

from swarm.protocol import ForwardCall, InferenceOpen, InferenceResult, InferenceStep, ServerInfo


class InferenceStream(Protocol):
    """An open Inference call to one server: a KV-cache session over some blocks."""

    @property
    def address(self) -> str:
        """The server's address (logged, and given to the previous server to push to)."""
        ...

    @property
    def server_id(self) -> str:
        """The id the server opened the session under."""
        ...

    async def send(self, step: InferenceStep, timeout: float) -> None:
        """Sends a step without waiting for its result."""
        ...

    async def receive(self, step_id: int, timeout: float) -> InferenceResult:
        """The result of step `step_id` (sent by us or pushed by the previous server)."""
        ...

    async def next_result(self) -> InferenceResult:
        """The next result on the stream, whatever its step (no timeout: readers wait)."""
        ...

    async def step(self, step: InferenceStep, timeout: float) -> torch.Tensor:
        """Sends a step and returns its output hidden states."""
        ...

    async def close(self, timeout: float) -> None:
        """Closes politely; a server that is already gone is not an error here."""
        ...

    def abort(self) -> None:
        """Cancels the call at once (a failed or replaced server)."""
        ...


class Transport(Protocol):
    """The calls a client makes to block servers, by address."""

    async def open_inference(self, address: str, request: InferenceOpen, timeout: float) -> InferenceStream:
        """Opens a KV-cache session on `address`."""
        ...

    async def forward(self, address: str, call: ForwardCall, timeout: float) -> torch.Tensor:
        """A stateless Forward call (hidden states[, mask]); returns the output hidden states."""
        ...

    async def backward(self, address: str, call: ForwardCall, timeout: float
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """A Backward call (inputs, output gradients[, mask], tuning); returns the input
        gradients and those of the call's tuning tensors (in `Tuning.slots()` order)."""
        ...

    async def info(self, address: str, timeout: float) -> ServerInfo:
        """The server's signed record and load."""
        ...

    async def ping(self, address: str, timeout: float) -> float:
        """Round-trip seconds of the cheapest call the server answers."""
        ...

    async def close(self) -> None:
        """Releases connections (the transport may be used again afterwards)."""
        ...
