"""`client` is the public face: its names resolve, and importing pure parts stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import client
import swarm.errors


@pytest.mark.parametrize("name", client.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(client, name)
    assert getattr(value, "__name__", None) == name
    assert name in dir(client)


def test_errors_are_the_swarm_error_tree() -> None:
    assert client.NoRoute is swarm.errors.NoRoute
    assert issubclass(client.PeerUnavailable, client.RemoteError)
    assert all(issubclass(getattr(client, n), client.SwarmError)
               for n in client.__all__ if n.endswith(("Error", "Input", "Route")) or n.startswith("Peer"))


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        client.Nope  # noqa: B018


def test_pure_routing_does_not_load_torch_or_grpc() -> None:
    code = "import sys, client.routing; print(sorted({'torch', 'grpc'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
