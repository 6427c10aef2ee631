"""The import contract of pyproject.toml ([tool.importlinter]) holds, and it bites.

The contract is what keeps the layout of DESIGN.md true: swarm/ is shared and imports
neither side, node/ and client/ never import each other, the runtime packages never import
the dev tools, and the pure decision packages import no networking, asyncio or torch. The second test plants one violation of each
kind in a copy of the tree and checks that import-linter names the broken contract, so a
contract that silently stopped matching (a renamed package, a typo) cannot pass.

No sockets; reads the source tree only (a few seconds, most of it import-linter's
parsing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("swarm", "node", "client", "devtools", "gateway")

VIOLATIONS = [
    # (file to plant, line, contract that must break)
    ("swarm/planted.py", "import node.config\n", "swarm/ is shared: it imports neither node nor client"),
    ("node/planted.py", "import client.config\n", "node and client never import each other"),
    ("client/planted.py", "import node.config\n", "node and client never import each other"),
    ("client/routing/planted.py", "import torch\n", "pure packages: no gRPC, sockets, asyncio, DHT or torch"),
    ("node/placement/planted.py", "import asyncio\n", "pure packages: no gRPC, sockets, asyncio, DHT or torch"),
    ("node/placement/planted2.py", "import grpc\n", "pure packages: no gRPC, sockets, asyncio, DHT or torch"),
    ("devtools/simulation/planted.py", "import socket\n", "pure packages: no gRPC, sockets, asyncio, DHT or torch"),
    ("gateway/planted.py", "import node.config\n",
     "the gateway (swarm serve) is a client: it never imports the server"),
    ("client/planted.py", "import devtools.launcher\n",
     "the runtime never imports the dev tools (the wheel does not ship them)"),
]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: a cache keyed on the real tree must not answer for the planted copy
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(cwd), "PATH": str(LINT_IMPORTS.parent)})


def _copy_tree(dest: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))


def test_the_project_keeps_its_import_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(("path", "line", "contract"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_a_planted_violation_breaks_its_contract(tmp_path: Path, path: str, line: str, contract: str) -> None:
    _copy_tree(tmp_path)
    (tmp_path / path).write_text(line)
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    assert path.removesuffix(".py").replace("/", ".") in broken, result.stdout
