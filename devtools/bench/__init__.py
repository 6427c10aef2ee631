"""Benchmarks of the swarm against local references: `scripts/bench SUBCOMMAND`.

Each subcommand is a module `devtools.bench.<name>` with a `main(argv) -> int`; the
dispatcher (`python -m devtools.bench`) runs the one named first on its command line.
Benchmarks print ratios measured in one run, alternating the things they compare;
they are not timed tests.

    local   the default model through a 3-server loopback swarm vs. one local process
    wan     the same over simulated wide-area links
    mixed   decoding next to a training client on one server: priority, strict, fifo queue
    finetune  a LoRA training step (forward + backward + AdamW) through the swarm vs. locally
    memory  peak memory per served block: float32 vs. int8 vs. nf4 (bitsandbytes)

To add one: write `devtools/bench/<name>.py` with `main(argv)` and list it below.
"""

from __future__ import annotations

SUBCOMMANDS: dict[str, str] = {
    "local": "per-token and batch-forward latency: loopback swarm vs. local transformers",
    "wan": "latency over simulated wide-area links",
    "mixed": "decoding next to a training client: priority vs. strict priority vs. fifo queue",
    "finetune": "a LoRA training step through a loopback swarm vs. the same step locally (peft)",
    "memory": "peak memory per served block: float32 vs. int8 vs. nf4 quantization",
}
"""Subcommand name -> one-line description; the module is devtools.bench.<name>."""

DEFAULT_SUBCOMMAND = "local"
