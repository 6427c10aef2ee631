"""docker-compose.yml is valid against the Compose specification (checked offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from node.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_matches_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_use_the_real_commands() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for flag in ("--initial-peers", "--public-address", "--blocks", "--num-blocks", "--identity"):
        assert flag in text
    # every server command line in the file parses with the real CLI
    services = yaml.safe_load(text)["services"]
    for name in ("bootstrap", "server1", "server2", "server3"):
        build_parser().parse_args(services[name]["command"])
