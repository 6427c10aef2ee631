"""The committed stubs in swarm/v1/ are exactly what scripts/gen-protos makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *[f"protos/{p}" for p in protos]],
        cwd=ROOT, check=True,
    )
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.py*")}
    assert fresh, "protoc generated nothing"
    stale = [str(name) for name, text in fresh.items()
             if not (ROOT / name).is_file() or (ROOT / name).read_text() != text]
    assert not stale, f"run scripts/gen-protos: out of date: {stale}"
