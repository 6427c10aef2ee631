"""swarm.rpc: the one status <-> error table, read both ways, and the shared options."""

from __future__ import annotations

import grpc
import pytest

from client.ban_policy import fails_over
from swarm import errors
from swarm.errors import PeerTimedOut, PeerUnavailable, RemoteError, RemoteInvalidInput, SwarmError, Unauthenticated
from swarm.rpc import (
    CHANNEL_OPTIONS,
    MAX_MESSAGE_BYTES,
    SERVER_OPTIONS,
    STATUS_TABLE,
    error_from_call,
    error_from_status,
    status_for,
)

SERVER_SIDE = [
    errors.InvalidInput, errors.CodecError, errors.SessionStateError, errors.NotServed,
    errors.CacheExhausted, errors.ServerDraining, errors.SessionTimeout,
]
"""Every class a server handler raises on purpose (CodecError through its parent)."""


@pytest.mark.parametrize("row", STATUS_TABLE, ids=[r.code.name for r in STATUS_TABLE])
def test_each_row_round_trips(row: object) -> None:
    from swarm.rpc import StatusRow

    assert isinstance(row, StatusRow)
    code = status_for(row.raised("bad"))
    assert code is row.code
    back = error_from_status(code, "bad", "10.0.0.1:5", "step 3")
    assert type(back) is row.remote
    assert (back.code, back.peer) == (code.name, "10.0.0.1:5")
    assert "step 3 on 10.0.0.1:5 failed" in str(back) and "bad" in str(back)


@pytest.mark.parametrize("error_type", SERVER_SIDE, ids=[t.__name__ for t in SERVER_SIDE])
def test_every_server_error_has_its_own_status(error_type: type[SwarmError]) -> None:
    code = status_for(error_type("x"))
    assert code is not grpc.StatusCode.INTERNAL
    assert isinstance(error_from_status(code, "x", "p", "w"), RemoteError)


def test_only_invalid_input_and_a_refused_token_come_back_as_not_retryable() -> None:
    remote = {r.code: r.remote for r in STATUS_TABLE}
    assert [c for c, t in remote.items() if not issubclass(t, PeerUnavailable)] == [
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED]
    assert remote[grpc.StatusCode.INVALID_ARGUMENT] is RemoteInvalidInput
    # every server of the swarm checks the same token: failing over cannot help
    refused = error_from_status(grpc.StatusCode.UNAUTHENTICATED, "wrong swarm token", "p:1", "step 1")
    assert type(refused) is Unauthenticated and isinstance(refused, RemoteInvalidInput)
    assert not fails_over(refused)


def test_codes_in_no_row_mean_the_peer_failed() -> None:
    assert status_for(ValueError("a bug")) is grpc.StatusCode.INTERNAL
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
                 grpc.StatusCode.OK):
        error = error_from_status(code, None, "p", "w")
        assert type(error) is PeerUnavailable and error.code == code.name


def test_failed_calls_become_typed_errors() -> None:
    timeout = error_from_call(TimeoutError(), "p:1", "ping")
    assert type(timeout) is PeerTimedOut and timeout.peer == "p:1" and timeout.code == "DEADLINE_EXCEEDED"
    already = RemoteInvalidInput("x", peer="q")
    assert error_from_call(already, "p:1", "ping") is already
    other = error_from_call(RuntimeError("write after end"), "p:1", "push")
    assert type(other) is PeerUnavailable and "write after end" in str(other)


def test_one_message_cap_everywhere() -> None:
    for options in (CHANNEL_OPTIONS, SERVER_OPTIONS):
        values = dict(options)
        assert values["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
        assert values["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    # a taken port must fail to bind rather than be shared
    assert dict(SERVER_OPTIONS)["grpc.so_reuseport"] == 0
    assert dict(CHANNEL_OPTIONS)["grpc.enable_retries"] == 0
