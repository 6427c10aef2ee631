"""Attacks on an open swarm, run against real `swarm-node` processes on 127.0.0.1.

Every test here is marked `adversarial` (run them alone with `scripts/test -m adversarial`):
each reproduces one attack of issue 10 and checks the defence from outside (statuses,
generations, records, memory), never by reading a server's internals. Attack loops are
bounded in count and time and target loopback only.

Helpers shared by the attack tests live in `tests/adversarial/attacks.py` (or next to the
test that needs them); the tiny checkpoints and the launcher come from the integration
tests' fixtures (`tests.integration.conftest.start_swarm`, `devtools.launcher`).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/adversarial/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.adversarial)
