"""swarm-llm's version, read once from the installed package's metadata.

For `swarm --version`, `swarm-node --version` and the servers' `swarm_server_info`
metric. A source tree that was never installed reports "0+unknown".
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import metadata

DISTRIBUTION = "swarm-llm"


@cache
def version() -> str:
    """The installed distribution's version, e.g. "0.1.0"."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def answer_version_flag(prog: str, argv: list[str] | None) -> bool:
    """Writes "PROG VERSION" to stdout and returns True when the command line is just --version.

    Checked before the subcommand parser runs, which would otherwise demand a subcommand.
    """
    args = sys.argv[1:] if argv is None else argv
    if args != ["--version"]:
        return False
    sys.stdout.write(f"{prog} {version()}\n")
    return True
