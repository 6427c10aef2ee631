"""The real default model (SmolLM2-135M-Instruct) through 3 server processes.

Slow: converts the model once (cached), starts 3 servers x 10 blocks, and compares with
transformers run locally on the same checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from client.model import AutoDistributedModelForCausalLM
from swarm.default_model import resolve_model
from tests.integration.local_swarm import LocalSwarm, Proc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return Path(resolve_model("default"))


@pytest.fixture(scope="module")
def smollm2_swarm(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSwarm, Proc, list[Proc]]]:
    swarm = LocalSwarm(tmp_path_factory.mktemp("smollm2"))
    try:
        dht = swarm.start_dht()
        procs = [swarm.spawn_server(f"smol-{b}", smollm2, [dht.address], "--blocks", b, "--throughput", "20")
                 for b in ("0:10", "10:20", "20:30")]
        servers = [swarm.wait_serving(p, timeout=300) for p in procs]
        yield swarm, dht, servers
    finally:
        swarm.stop_all()


def test_chat_answer_equals_local_transformers(smollm2: Path, smollm2_swarm: tuple[LocalSwarm, Proc, list[Proc]]) -> None:
    _, dht, _ = smollm2_swarm
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    reference = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    expected = reference.generate(ids, max_new_tokens=24, do_sample=False)
    model = AutoDistributedModelForCausalLM.from_pretrained(smollm2, [dht.address])
    try:
        out = model.generate(ids, max_new_tokens=24, do_sample=False)
    finally:
        model.close()
    assert torch.equal(out, expected)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident set, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _peak_of_python(code: str) -> int:
    """Peak RSS of a fresh interpreter that runs `code` then waits to be measured."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", code + "\nimport sys; print('ready', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return _peak_rss(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_server_peak_memory_is_well_under_the_whole_model(smollm2: Path,
                                                          smollm2_swarm: tuple[LocalSwarm, Proc, list[Proc]]) -> None:
    _, _, servers = smollm2_swarm
    # each side over the peak of a process that only imports the same code
    whole = _peak_of_python(f"import torch\nfrom transformers import AutoModelForCausalLM\n"
                            f"m = AutoModelForCausalLM.from_pretrained({str(smollm2)!r}, dtype='float32')\n"
                            f"m(torch.arange(8)[None])")  # a forward touches every weight
    whole_imports = _peak_of_python("import torch\nfrom transformers import AutoModelForCausalLM")
    server_imports = _peak_of_python("import node.server, node.start_command")
    server = max(_peak_rss(p.popen.pid) for p in servers)
    whole_model, one_server = whole - whole_imports, server - server_imports
    print(f"\npeak RSS over the same imports: whole model {whole_model / 2**20:.0f} MiB, "
          f"server with 10 of 30 blocks {one_server / 2**20:.0f} MiB "
          f"(absolute: {whole / 2**20:.0f} vs {server / 2**20:.0f} MiB)")
    assert one_server < 0.5 * whole_model
