from swarm.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_STATE_UNSPECIFIED: _ClassVar[ServerState]
    SERVER_STATE_JOINING: _ClassVar[ServerState]
    SERVER_STATE_ONLINE: _ClassVar[ServerState]
    SERVER_STATE_DRAINING: _ClassVar[ServerState]
    SERVER_STATE_OFFLINE: _ClassVar[ServerState]
SERVER_STATE_UNSPECIFIED: ServerState
SERVER_STATE_JOINING: ServerState
SERVER_STATE_ONLINE: ServerState
SERVER_STATE_DRAINING: ServerState
SERVER_STATE_OFFLINE: ServerState

class BlockRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Throughput(_message.Message):
    __slots__ = ("inference_tokens_per_s", "forward_tokens_per_s", "network_tokens_per_s")
    INFERENCE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    FORWARD_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    NETWORK_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    inference_tokens_per_s: float
    forward_tokens_per_s: float
    network_tokens_per_s: float
    def __init__(self, inference_tokens_per_s: _Optional[float] = ..., forward_tokens_per_s: _Optional[float] = ..., network_tokens_per_s: _Optional[float] = ...) -> None: ...

class ServerRecord(_message.Message):
    __slots__ = ("address", "model", "blocks", "state", "throughput", "free_cache_tokens", "cache_tokens", "dtype", "quantization", "version", "next_hop_rtt_ms", "model_num_blocks", "hidden_size", "adapters")
    class NextHopRttMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    FREE_CACHE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_RTT_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    address: str
    model: str
    blocks: BlockRange
    state: ServerState
    throughput: Throughput
    free_cache_tokens: int
    cache_tokens: int
    dtype: _tensor_pb2.DType
    quantization: str
    version: str
    next_hop_rtt_ms: _containers.ScalarMap[str, float]
    model_num_blocks: int
    hidden_size: int
    adapters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, address: _Optional[str] = ..., model: _Optional[str] = ..., blocks: _Optional[_Union[BlockRange, _Mapping]] = ..., state: _Optional[_Union[ServerState, str]] = ..., throughput: _Optional[_Union[Throughput, _Mapping]] = ..., free_cache_tokens: _Optional[int] = ..., cache_tokens: _Optional[int] = ..., dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., quantization: _Optional[str] = ..., version: _Optional[str] = ..., next_hop_rtt_ms: _Optional[_Mapping[str, float]] = ..., model_num_blocks: _Optional[int] = ..., hidden_size: _Optional[int] = ..., adapters: _Optional[_Iterable[str]] = ...) -> None: ...

class BlockEntry(_message.Message):
    __slots__ = ("address", "blocks", "state", "inference_tokens_per_s", "forward_tokens_per_s", "free_cache_tokens", "network_tokens_per_s")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    FORWARD_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    FREE_CACHE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    address: str
    blocks: BlockRange
    state: ServerState
    inference_tokens_per_s: float
    forward_tokens_per_s: float
    free_cache_tokens: int
    network_tokens_per_s: float
    def __init__(self, address: _Optional[str] = ..., blocks: _Optional[_Union[BlockRange, _Mapping]] = ..., state: _Optional[_Union[ServerState, str]] = ..., inference_tokens_per_s: _Optional[float] = ..., forward_tokens_per_s: _Optional[float] = ..., free_cache_tokens: _Optional[int] = ..., network_tokens_per_s: _Optional[float] = ...) -> None: ...

class ModelEntry(_message.Message):
    __slots__ = ("model", "num_blocks", "hidden_size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    num_blocks: int
    hidden_size: int
    def __init__(self, model: _Optional[str] = ..., num_blocks: _Optional[int] = ..., hidden_size: _Optional[int] = ...) -> None: ...

class DhtPayload(_message.Message):
    __slots__ = ("key", "issued_at", "expiration", "record", "block", "model")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    key: str
    issued_at: float
    expiration: float
    record: ServerRecord
    block: BlockEntry
    model: ModelEntry
    def __init__(self, key: _Optional[str] = ..., issued_at: _Optional[float] = ..., expiration: _Optional[float] = ..., record: _Optional[_Union[ServerRecord, _Mapping]] = ..., block: _Optional[_Union[BlockEntry, _Mapping]] = ..., model: _Optional[_Union[ModelEntry, _Mapping]] = ...) -> None: ...

class SignedEntry(_message.Message):
    __slots__ = ("payload", "public_key", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    public_key: bytes
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DhtValue(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[SignedEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[SignedEntry, _Mapping]]] = ...) -> None: ...
