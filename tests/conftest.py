"""Fixtures every test folder may use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from swarm.rpc import ChannelPool


@pytest.fixture()
async def pool() -> AsyncIterator[ChannelPool]:
    """A client's gRPC channels (to real servers), closed after the test."""
    channels = ChannelPool()
    yield channels
    await channels.close()
