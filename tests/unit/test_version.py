"""`swarm --version` and `swarm-node --version` print the installed package's version."""

from __future__ import annotations

from importlib import metadata

import pytest

from client.cli import main as swarm_main
from node.cli import main as node_main
from swarm.version import answer_version_flag, version


def test_version_is_the_installed_distributions() -> None:
    # swarm.__version__ (in records) and pyproject's version (in the package) stay one number
    assert version() == metadata.version("swarm-llm")


def test_swarm_node_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert node_main(["--version"]) == 0
    assert capsys.readouterr().out == f"swarm-node {version()}\n"


def test_swarm_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert swarm_main(["--version"]) == 0
    assert capsys.readouterr().out == f"swarm {version()}\n"


def test_only_a_lone_version_flag_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert answer_version_flag("swarm", ["--version"])
    assert not answer_version_flag("swarm", ["status", "--version"])
    assert not answer_version_flag("swarm", [])
    assert capsys.readouterr().out == f"swarm {version()}\n"
