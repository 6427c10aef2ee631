"""swarm.settings.choose_grpc_io: when importing swarm picks gRPC's poller I/O, and when not."""

from __future__ import annotations

import pytest

from swarm.settings import GRPC_EXPERIMENTS_ENV, POLLER_IO, choose_grpc_io


def test_an_unset_variable_gets_the_poller_io_on_a_measured_grpcio() -> None:
    environ: dict[str, str] = {}
    assert choose_grpc_io(environ, grpc_loaded=False, grpc_version="1.85.1")
    assert environ == {GRPC_EXPERIMENTS_ENV: POLLER_IO}


@pytest.mark.parametrize(("environ", "loaded", "version"), [
    ({GRPC_EXPERIMENTS_ENV: "-other"}, False, "1.85.1"),  # the operator's choice wins
    ({GRPC_EXPERIMENTS_ENV: ""}, False, "1.85.1"),        # even an empty one
    ({}, True, "1.85.1"),                                 # gRPC read the variable already
    ({}, False, "1.86.0"),                                # not measured: may not know the names
    ({}, False, "1.8.5"),
])
def test_the_variable_is_left_alone(environ: dict[str, str], loaded: bool, version: str) -> None:
    before = dict(environ)
    assert not choose_grpc_io(environ, grpc_loaded=loaded, grpc_version=version)
    assert environ == before
