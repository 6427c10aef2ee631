"""Every flag of every command is in the README (which documents them for users)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from client import cli as swarm_cli
from node.cli import build_parser as node_parser
from swarm.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _flags(parser: argparse.ArgumentParser) -> set[tuple[str, str]]:
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= {(name, o) for a in sub._actions for o in a.option_strings if o.startswith("--")}
    return found - {(name, "--help") for name, _ in found}


def test_every_command_flag_is_documented() -> None:
    text = README.read_text()
    commands = {"swarm-node": node_parser(), "swarm": build_parser("swarm", None, swarm_cli.COMMANDS)}
    missing = [f"{prog} {name} {flag}" for prog, parser in commands.items() for name, flag in sorted(_flags(parser))
               if not re.search(re.escape(flag) + r"(?![\w-])", text)]
    assert len(_flags(commands["swarm-node"])) > 20  # the parsers were really read
    assert missing == [], f"flags missing from README.md: {missing}"
