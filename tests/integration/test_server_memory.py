"""A server holding 10 of SmolLM2's 30 blocks needs far less memory than the whole model.

Slow. Peak resident memory (VmHWM) of each side is measured over a baseline process
that imports the same code and loads nothing, so that the ~400 MB of torch,
transformers and grpc count on neither side:

- whole model: a fresh interpreter loads SmolLM2 with transformers (float32) and runs
  one forward, so every weight is touched;
- server: `swarm-node start --blocks 0:10`, after a 64-token prefill and 32 decode
  steps through its blocks (its KV cache and activations included).

The server's increment must stay under its share of the weights plus slack, and far
under the whole model's: no silent full-checkpoint read, no copy of every layer.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from client.model import AutoDistributedModelForCausalLM
from devtools.launcher import LocalSwarm, LocalSwarmConfig, read_peak_rss
from swarm.default_model import resolve_model
from swarm.records import BlockRange

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MiB = 1 << 20
SPAN = BlockRange(0, 10)
NUM_BLOCKS = 30


def peak_of_python(code: str) -> int:
    """Peak RSS of a fresh interpreter after it has run `code`."""
    script = code + "\nimport sys; print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"measuring process failed: {line!r}")
        return read_peak_rss(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def weight_bytes(model_dir: str) -> tuple[int, int]:
    """(all parameters, parameters of blocks in SPAN) in bytes, from the checkpoint."""
    from safetensors import safe_open

    total = served = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as tensors:
            for key in tensors.keys():
                shape = tensors.get_slice(key).get_shape()
                size = 4 * int(torch.tensor(shape).prod())  # float32
                total += size
                parts = key.split(".")
                if "layers" in parts and int(parts[parts.index("layers") + 1]) in range(SPAN.start, SPAN.end):
                    served += size
    return total, served


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_model("default")


@pytest.fixture(scope="module")
def server(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    config = LocalSwarmConfig(model_dir, (SPAN,), workdir=tmp_path_factory.mktemp("memory"),
                              server_args=("--drain-grace", "2"))
    with LocalSwarm(config) as running:
        yield running


def test_server_peak_memory_is_well_under_the_whole_model(model_dir: str, server: LocalSwarm) -> None:
    model = AutoDistributedModelForCausalLM.from_pretrained(model_dir, server.initial_peers)
    try:
        blocks = model.layers[SPAN.start:SPAN.end]
        with torch.inference_mode(), blocks.inference_session(max_length=96) as session:
            hidden = model.head.embed(torch.randint(0, 49152, (1, 64), generator=torch.Generator().manual_seed(0)))
            out = session.step(hidden)
            for _ in range(32):
                out = session.step(out[:, -1:])
    finally:
        model.close()
    server_peak = server.servers[0].peak_rss_bytes()
    server_base = peak_of_python("import node.cli, node.server, node.start_command")
    whole_peak = peak_of_python(
        "import torch\nfrom transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({model_dir!r}, dtype=torch.float32)\n"
        "with torch.inference_mode(): m(torch.arange(8)[None])"
    )
    whole_base = peak_of_python("import torch\nfrom transformers import AutoModelForCausalLM")
    model_bytes, served_bytes = weight_bytes(model_dir)
    server_increment, whole_increment = server_peak - server_base, whole_peak - whole_base
    print(f"\nweights: whole model {model_bytes / MiB:.0f} MiB, blocks {SPAN} {served_bytes / MiB:.0f} MiB\n"
          f"peak RSS: server {server_peak / MiB:.0f} MiB (imports alone {server_base / MiB:.0f}), "
          f"whole model {whole_peak / MiB:.0f} MiB (imports alone {whole_base / MiB:.0f})\n"
          f"increments: server +{server_increment / MiB:.0f} MiB, whole model +{whole_increment / MiB:.0f} MiB")
    assert whole_increment > 0.9 * model_bytes  # the reference really holds the model
    assert server_increment < served_bytes + 100 * MiB
    assert server_increment < whole_increment - 0.5 * model_bytes
    assert server_peak < whole_peak - 0.5 * model_bytes  # absolute peaks too, baselines aside
