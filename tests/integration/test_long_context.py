"""An 8192-token session of SmolLM2 (its whole context) through 3 servers equals local greedy,
and no server's memory grows past its KV-cache budget (plus one prefill chunk's working set).

Slow: ~3 min here (2 shared cores, busy): prepares SmolLM2-135M-Instruct (the default
model, cached after the first run), starts servers for blocks 0:10, 10:20 and 20:30,
prefills a prompt of 8160 tokens and generates 32 more: 8192 tokens, SmolLM2's context,
the servers' default --cache-tokens and their longest session. The real model, not a tiny
one with a long context: transformers runs the same 8k greedy generation locally in
~25 s here, so the comparison stays within ~3 minutes.

The client sends the prompt in chunks (`client.prefill`: 512 tokens early, ~128 near 8k). Memory:
each server's peak resident set is reset (/proc/PID/clear_refs) before the session and
read after it (and after a short warm-up session: the first one pages the weights in); the
growth over its resident set before the session must stay within its
KV-cache budget in bytes, --cache-tokens x bytes per token per block (float32 here, the
dtype it serves in, `node.memory.block_bytes`) x its 10 blocks = 120 MiB, plus
WORKING_SET_BYTES for one chunk's activations. A prompt run as one 8160-token task holds
8160 x 8160 attention scores per head where the kernel materialises them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from client.model import AutoDistributedModelForCausalLM
from swarm.prefill import PREFILL_ATTENTION_AREA
from devtools.launcher import LocalSwarm, LocalSwarmConfig, NodeProcess
from node.memory import block_bytes
from swarm.default_model import resolve_model
from swarm.records import BlockRange

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CONTEXT = 8192
"""SmolLM2's max_position_embeddings, the servers' default --cache-tokens and session cap."""
NEW_TOKENS = 32
PROMPT_TOKENS = CONTEXT - NEW_TOKENS
SPANS = (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30))
MiB = 1 << 20
HEADS = 9
WORKING_SET_BYTES = 3 * PREFILL_ATTENTION_AREA * HEADS * 4 + 136 * MiB
"""One prefill chunk's activations: a few float32 tensors of its query x key pairs per head
(scores, softmax, mask: 3 x 36 MiB at most, `swarm.prefill`), and 136 MiB for the rest (MLP
activations, a layer's cache while it grows, messages and their copies, the allocator's
slack). Bound 364 MiB. Measured here, after a warm-up: 234-273 MiB of growth per server
(the cache is 120 of it) with the server's one malloc arena (`node.heap`); 324-415 MiB
before it, when the event loop's thread (inline decode steps) and the compute thread
(prefill chunks) each kept the freed pages of their own arena. In one process, the same
prompt as one step grew 10 blocks by ~470 MiB."""


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_model("default")


@pytest.fixture(scope="module")
def swarm(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarm]:
    config = LocalSwarmConfig(model_dir, SPANS, workdir=tmp_path_factory.mktemp("long-context"),
                              server_args=("--cache-tokens", str(CONTEXT), "--drain-grace", "2"))
    with LocalSwarm(config) as running:
        yield running


def _status(pid: int, field: str) -> int:
    """A VmRSS/VmHWM figure of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(server: NodeProcess) -> int:
    """Resets the server's peak RSS to its RSS now (Linux: clear_refs 5) and returns it."""
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    return _status(server.pid, "VmRSS")


def test_an_8k_session_equals_local_greedy_within_the_memory_budget(model_dir: str, swarm: LocalSwarm) -> None:
    prompt = torch.randint(0, 49152, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    model = AutoDistributedModelForCausalLM.from_pretrained(model_dir, swarm.initial_peers)
    try:
        model.generate(prompt[:, :16], max_new_tokens=2, do_sample=False)  # pages every weight in, once
        before = [_reset_peak(server) for server in swarm.servers]
        with model.inference_session(max_length=CONTEXT) as session:
            out = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
            assert session.position == CONTEXT - 1  # the last token is generated, never sent
    finally:
        model.close()
    growth = [_status(server.pid, "VmHWM") - rss for server, rss in zip(swarm.servers, before, strict=True)]
    _, kv_per_token_per_block = block_bytes(model_dir, "auto")
    budget = CONTEXT * kv_per_token_per_block * len(SPANS[0])
    print(f"KV budget {budget / MiB:.1f} MiB per server; peak growth {[round(g / MiB, 1) for g in growth]} MiB")

    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = reference.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert out.shape[1] == CONTEXT
    assert out.tolist() == expected.tolist()
    assert kv_per_token_per_block == 2 * 3 * 64 * 4  # K and V of 3 KV heads of 64 floats, float32
    for server, grew in zip(swarm.servers, growth, strict=True):
        assert grew <= budget + WORKING_SET_BYTES, (server.name, grew / MiB)
