"""swarm-llm's version (`swarm.__version__`, what server records carry) for the CLIs.

For `swarm --version`, `swarm-node --version` and the servers' `swarm_server_info`
metric. tests/unit/test_version.py keeps it equal to pyproject's version.
"""

from __future__ import annotations

import sys

import swarm


def version() -> str:
    """swarm-llm's version, e.g. "0.1.0"."""
    return swarm.__version__


def answer_version_flag(prog: str, argv: list[str] | None) -> bool:
    """Writes "PROG VERSION" to stdout and returns True when the command line is just --version.

    Checked before the subcommand parser runs, which would otherwise demand a subcommand.
    """
    args = sys.argv[1:] if argv is None else argv
    if args != ["--version"]:
        return False
    sys.stdout.write(f"{prog} {version()}\n")
    return True
