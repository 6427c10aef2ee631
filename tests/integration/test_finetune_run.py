"""The real fine-tuning run (`scripts/finetune`, devtools.finetune) improves SmolLM2 through a swarm.

Runs `python -m devtools.finetune` (3 real servers of SmolLM2-135M-Instruct, LoRA on every
projection, 20 steps of batch 8 on two-number addition) and reads what it wrote: the
held-out loss falls by more than half (it starts near 1.7: the model answers in its own
words), the exact-match accuracy on held-out sums rises above its start (0%), and the
adapter (PEFT files) and the loss curve (a PNG) are there. Bounded at 15 minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_lora_through_the_swarm_lowers_held_out_loss(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "devtools.finetune", "--steps", "20", "--eval-examples", "8",
                           "--out", str(out), "--workdir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=850)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    before, after = results["before"], results["after"]
    assert after["loss"] < 0.5 * before["loss"], results
    assert after["accuracy"] > before["accuracy"], results
    assert len(results["losses"]) == 20
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "held-out loss" in done.stdout
