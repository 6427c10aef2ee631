"""The block service's messages as our own dataclasses (see block_service.proto).

`swarm.codec.messages` converts these to and from protobuf; node/ and client/ use only
these. Tensors here are already decoded and validated against the codec's size limits;
semantic checks (hidden size, session length) belong to the server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from swarm.records import BlockRange
from swarm.tuning import Tuning

MAX_STEP_HOPS = 8
"""Longest chain a step may carry: bounds what one step can make servers compute."""
MAX_RESULTS_BATCH = 8
"""Most results in one `InferenceResults`: the copies a server holds for `defer_copy`."""
MAX_DEFERRED_TOKENS = 16
"""Largest step (batch x tokens) whose copy a server may hold back (a decode or draft step)."""
COPY_HOLD_S = 0.2
"""Longest a server holds a copy (`defer_copy`) while no step comes: a client that waits for
copies (a failover's replay, a NaN's origin, a silent server's blame) waits this much longer."""


class Compression(enum.Enum):
    """How a float tensor's elements travel on the wire (`swarm.v1.Compression`; the
    codec is `swarm.codec.compression`). The values are the CLI's names."""

    NONE = "none"
    FLOAT16 = "float16"
    """float32 elements sent as float16 (half the bytes; relative error <= 2^-11)."""
    BFLOAT16 = "bfloat16"
    """float32 elements sent as bfloat16 (half the bytes; relative error <= 2^-8)."""
    BLOCKWISE_8BIT = "blockwise8"
    """Any float dtype as int8 codes with one float32 scale per 64 elements (~3.8x fewer
    bytes than float32; error <= 1/254 of each block's largest magnitude)."""


@dataclass(frozen=True)
class InferenceOpen:
    """First message of an inference session."""

    model: str
    blocks: BlockRange
    batch_size: int
    max_length: int
    dtype: torch.dtype
    session_id: str = ""
    push_capability: str = ""
    """Secret a push into this session must carry (empty: no pushes accepted)."""
    tuning: Tuning | None = None
    """The client's deep prompts and LoRA factors, applied to every step of the session."""
    compression: Compression = field(default=Compression.NONE, kw_only=True)
    """How hidden states travel in this session: the client's steps, the server's results
    and its pushes to the next server."""


@dataclass(frozen=True)
class NextHop:
    """Where a server pushes a step's output next (server-to-server chaining)."""

    address: str
    session_id: str
    capability: str = ""
    """The next session's push capability, sent with each push to it."""


@dataclass(frozen=True)
class InferenceStep:
    """One step: hidden states of new tokens, appended at `start_position`."""

    step_id: int
    hidden_states: torch.Tensor
    start_position: int = 0
    position_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    next_hops: tuple[NextHop, ...] = ()
    """The rest of the chain after the receiving server (empty: no push)."""
    defer_copy: bool = False
    """A server that pushes the step on may send its copy of the output later, batched
    (`InferenceResults`); for steps of at most MAX_DEFERRED_TOKENS tokens (batch x tokens)."""


@dataclass(frozen=True)
class InferenceClose:
    """Ends the session."""


InferenceRequest = InferenceOpen | InferenceStep | InferenceClose


@dataclass(frozen=True)
class InferenceOpened:
    """The server accepted the session."""

    server_id: str
    reserved_cache_tokens: int


@dataclass(frozen=True)
class InferenceResult:
    """Output of one step."""

    step_id: int
    hidden_states: torch.Tensor
    push_failed: bool = False
    """The push to the next server failed: the client relays this output itself."""
    compression: Compression = field(default=Compression.NONE, kw_only=True)
    """How `hidden_states` travel: the session's when sent; as they came when decoded."""


@dataclass(frozen=True)
class InferenceClosed:
    """The session is closed; the stream ends."""


@dataclass(frozen=True)
class InferenceResults:
    """Several steps' results in step order: copies a server held for `defer_copy`."""

    results: tuple[InferenceResult, ...]


InferenceResponse = InferenceOpened | InferenceResult | InferenceResults | InferenceClosed


@dataclass(frozen=True)
class PushedStep:
    """A step one server hands to the next server's session."""

    session_id: str
    step: InferenceStep
    capability: str = ""
    """The receiving session's push capability."""
    compression: Compression = field(default=Compression.NONE, kw_only=True)
    """How the step's hidden states travel (the pushing session's compression)."""


@dataclass(frozen=True)
class ForwardCall:
    """A stateless forward (or backward) call: blocks and the tensors it carries."""

    model: str
    blocks: BlockRange
    tensors: tuple[torch.Tensor, ...]
    tuning: Tuning | None = None
    """Deep prompts and LoRA factors to apply (a Backward call returns their gradients)."""
    tuning_by_reference: bool = False
    """The tuning's bytes are not sent: the server uses those it keeps under `tuning.digest`
    (then `tuning`'s tensors, decoded, are on the `meta` device)."""
    compression: Compression = field(default=Compression.NONE, kw_only=True)
    """How the call's float tensors (not its tuning) travel, and how the server should send
    its answer (`ForwardHeader.compression`)."""
    pass_id: str = ""
    """A training pass's random id (32 hex digits) or "": a Forward with one may have its
    autograd graph kept by the server for the Backward with the same id."""


@dataclass(frozen=True)
class ForwardHeader:
    """The first message of a Forward/Backward call, before any payload byte is read."""

    model: str
    blocks: BlockRange
    tensors: tuple[torch.Tensor, ...]
    """Shapes and dtypes of the tensors that follow, as tensors on the `meta` device (no data)."""
    nbytes: int
    """Payload bytes the header declares, all tensors together (tuning tensors included)."""
    tuning: Tuning | None = None
    """The declared tuning, its tensors on the `meta` device like `tensors`."""
    tuning_by_reference: bool = False
    """The tuning's bytes do not follow (see `ForwardCall.tuning_by_reference`)."""
    compression: Compression = field(default=Compression.NONE, kw_only=True)
    """How the caller wants the answer's tensors sent."""
    pass_id: str = ""
    """See `ForwardCall.pass_id`."""


@dataclass(frozen=True)
class ServerInfo:
    """Answer of the Info call: the signed record (raw SignedEntry bytes) and live load."""

    signed_record: bytes
    active_sessions: int
    free_cache_tokens: int
