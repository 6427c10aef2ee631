from swarm.v1 import tensor_pb2 as _tensor_pb2
from swarm.v1 import record_pb2 as _record_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferenceRequest(_message.Message):
    __slots__ = ("open", "step", "close")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    open: InferenceOpen
    step: InferenceStep
    close: InferenceClose
    def __init__(self, open: _Optional[_Union[InferenceOpen, _Mapping]] = ..., step: _Optional[_Union[InferenceStep, _Mapping]] = ..., close: _Optional[_Union[InferenceClose, _Mapping]] = ...) -> None: ...

class InferenceOpen(_message.Message):
    __slots__ = ("model", "blocks", "batch_size", "max_length", "dtype", "session_id", "push_capability", "tuning", "compression")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PUSH_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    TUNING_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    blocks: _record_pb2.BlockRange
    batch_size: int
    max_length: int
    dtype: _tensor_pb2.DType
    session_id: str
    push_capability: str
    tuning: TuningHeader
    compression: _tensor_pb2.Compression
    def __init__(self, model: _Optional[str] = ..., blocks: _Optional[_Union[_record_pb2.BlockRange, _Mapping]] = ..., batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., session_id: _Optional[str] = ..., push_capability: _Optional[str] = ..., tuning: _Optional[_Union[TuningHeader, _Mapping]] = ..., compression: _Optional[_Union[_tensor_pb2.Compression, str]] = ...) -> None: ...

class NextHop(_message.Message):
    __slots__ = ("address", "session_id", "capability")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    address: str
    session_id: str
    capability: str
    def __init__(self, address: _Optional[str] = ..., session_id: _Optional[str] = ..., capability: _Optional[str] = ...) -> None: ...

class InferenceStep(_message.Message):
    __slots__ = ("step_id", "hidden_states", "start_position", "position_ids", "attention_mask", "next_hops", "defer_copy")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_STATES_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    POSITION_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOPS_FIELD_NUMBER: _ClassVar[int]
    DEFER_COPY_FIELD_NUMBER: _ClassVar[int]
    step_id: int
    hidden_states: _tensor_pb2.Tensor
    start_position: int
    position_ids: _tensor_pb2.Tensor
    attention_mask: _tensor_pb2.Tensor
    next_hops: _containers.RepeatedCompositeFieldContainer[NextHop]
    defer_copy: bool
    def __init__(self, step_id: _Optional[int] = ..., hidden_states: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., start_position: _Optional[int] = ..., position_ids: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., attention_mask: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., next_hops: _Optional[_Iterable[_Union[NextHop, _Mapping]]] = ..., defer_copy: _Optional[bool] = ...) -> None: ...

class InferenceClose(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InferenceResponse(_message.Message):
    __slots__ = ("opened", "result", "closed", "results")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    opened: InferenceOpened
    result: InferenceResult
    closed: InferenceClosed
    results: InferenceResults
    def __init__(self, opened: _Optional[_Union[InferenceOpened, _Mapping]] = ..., result: _Optional[_Union[InferenceResult, _Mapping]] = ..., closed: _Optional[_Union[InferenceClosed, _Mapping]] = ..., results: _Optional[_Union[InferenceResults, _Mapping]] = ...) -> None: ...

class InferenceResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InferenceResult]
    def __init__(self, results: _Optional[_Iterable[_Union[InferenceResult, _Mapping]]] = ...) -> None: ...

class InferenceOpened(_message.Message):
    __slots__ = ("server_id", "reserved_cache_tokens")
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_CACHE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    reserved_cache_tokens: int
    def __init__(self, server_id: _Optional[str] = ..., reserved_cache_tokens: _Optional[int] = ...) -> None: ...

class InferenceResult(_message.Message):
    __slots__ = ("step_id", "hidden_states", "push_failed")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_STATES_FIELD_NUMBER: _ClassVar[int]
    PUSH_FAILED_FIELD_NUMBER: _ClassVar[int]
    step_id: int
    hidden_states: _tensor_pb2.Tensor
    push_failed: bool
    def __init__(self, step_id: _Optional[int] = ..., hidden_states: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., push_failed: _Optional[bool] = ...) -> None: ...

class InferenceClosed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardOpen(_message.Message):
    __slots__ = ("model", "blocks", "tensors", "tuning", "compression", "pass_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TUNING_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PASS_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    blocks: _record_pb2.BlockRange
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    tuning: TuningHeader
    compression: _tensor_pb2.Compression
    pass_id: str
    def __init__(self, model: _Optional[str] = ..., blocks: _Optional[_Union[_record_pb2.BlockRange, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., tuning: _Optional[_Union[TuningHeader, _Mapping]] = ..., compression: _Optional[_Union[_tensor_pb2.Compression, str]] = ..., pass_id: _Optional[str] = ...) -> None: ...

class TuningSlot(_message.Message):
    __slots__ = ("block", "kind", "target")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    block: int
    kind: int
    target: str
    def __init__(self, block: _Optional[int] = ..., kind: _Optional[int] = ..., target: _Optional[str] = ...) -> None: ...

class TuningHeader(_message.Message):
    __slots__ = ("slots", "tensors", "lora_scale", "adapter", "digest", "by_reference")
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    LORA_SCALE_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    BY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    slots: _containers.RepeatedCompositeFieldContainer[TuningSlot]
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    lora_scale: float
    adapter: str
    digest: bytes
    by_reference: bool
    def __init__(self, slots: _Optional[_Iterable[_Union[TuningSlot, _Mapping]]] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., lora_scale: _Optional[float] = ..., adapter: _Optional[str] = ..., digest: _Optional[bytes] = ..., by_reference: _Optional[bool] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("open", "chunk")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    open: ForwardOpen
    chunk: bytes
    def __init__(self, open: _Optional[_Union[ForwardOpen, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TensorStreamHeader(_message.Message):
    __slots__ = ("tensors",)
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    def __init__(self, tensors: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: TensorStreamHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[TensorStreamHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class BackwardRequest(_message.Message):
    __slots__ = ("open", "chunk")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    open: ForwardOpen
    chunk: bytes
    def __init__(self, open: _Optional[_Union[ForwardOpen, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class BackwardResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: TensorStreamHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[TensorStreamHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("session_id", "step", "capability")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    step: InferenceStep
    capability: str
    def __init__(self, session_id: _Optional[str] = ..., step: _Optional[_Union[InferenceStep, _Mapping]] = ..., capability: _Optional[str] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("received_bytes",)
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    def __init__(self, received_bytes: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("record", "active_sessions", "free_cache_tokens")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    FREE_CACHE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    record: _record_pb2.SignedEntry
    active_sessions: int
    free_cache_tokens: int
    def __init__(self, record: _Optional[_Union[_record_pb2.SignedEntry, _Mapping]] = ..., active_sessions: _Optional[int] = ..., free_cache_tokens: _Optional[int] = ...) -> None: ...
