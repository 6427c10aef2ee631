"""House limits of DESIGN.md, checked: modules under 400 lines, functions under 60.

Generated gRPC stubs are exempt (built, not written). A module or function that grows past
its limit wants splitting along its jobs, not a higher limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("swarm", "node", "client", "devtools")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return [p for p in files if "_pb2" not in p.name]


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_there_are_sources_to_check() -> None:
    assert len(_sources()) > 50


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} has {len(text.splitlines())} lines"
    long = [(f.name, f.lineno, (f.end_lineno or f.lineno) - f.lineno + 1) for f in _functions(ast.parse(text))]
    assert [f for f in long if f[2] > MAX_FUNCTION_LINES] == [], f"functions over {MAX_FUNCTION_LINES} lines"
