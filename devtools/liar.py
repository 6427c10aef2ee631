"""A lying block server, for testing the client's output checks (dev tool, not runtime).

    python -m devtools.liar --lie noise|zeros|nan|passthrough start <swarm-node start flags>

runs a real `swarm-node start` whose blocks lie: every inference step and Forward call
answers with noise at the activations' scale, zeros, NaN, or the input passed through
unchanged. The lie is patched in at the edge of the compute (`node.backend.BlockBackend`)
in this process only; node/ itself knows nothing of it. `spawn_liar` starts one inside a
`devtools.launcher.LocalSwarm` for tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from devtools.launcher import LocalSwarm, NodeProcess

LIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "noise": lambda inp, out: out + torch.randn_like(out) * out.float().std().to(out.dtype),
    "zeros": lambda inp, out: torch.zeros_like(out),
    "nan": lambda inp, out: torch.full_like(out, float("nan")),
    "passthrough": lambda inp, out: inp.to(out.dtype).clone(),
}
"""Each lie: (the blocks' input, their true output) -> what the server answers."""


def install(lie: str) -> None:
    """Makes every BlockBackend in this process answer steps and Forward calls with `lie`."""
    from node.backend import BlockBackend

    transform = LIES[lie]
    true_step, true_forward = BlockBackend.step, BlockBackend.forward

    async def step(self: BlockBackend, cache: Any, blocks: Any, hidden: torch.Tensor, *args: Any,
                   **kwargs: Any) -> torch.Tensor:
        return transform(hidden, await true_step(self, cache, blocks, hidden, *args, **kwargs))

    async def forward(self: BlockBackend, blocks: Any, hidden: torch.Tensor, *args: Any,
                      **kwargs: Any) -> torch.Tensor:
        return transform(hidden, await true_forward(self, blocks, hidden, *args, **kwargs))

    BlockBackend.step = step  # type: ignore[method-assign]
    BlockBackend.forward = forward  # type: ignore[method-assign]
    if lie == "nan":  # a liar also skips the honest node's own output check: NaN reaches the wire
        import node.inference
        import node.servicer

        for module in (node.inference, node.servicer):
            if hasattr(module, "check_finite_output"):
                setattr(module, "check_finite_output", lambda tensor: None)


def spawn_liar(swarm: LocalSwarm, lie: str, name: str, model: Path, peers: list[str], *extra: str) -> NodeProcess:
    """Starts a lying `swarm-node start` in `swarm`'s work directory (stopped with it)."""
    workdir = swarm.workdir
    log, ready_file = workdir / f"{name}.log", workdir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)
    args = ["start", "--model", str(model), "--initial-peers", *peers, "--host", swarm.config.host,
            *swarm.config.server_args, *extra, "--ready-file", str(ready_file)]
    with log.open("wb") as handle:
        popen = subprocess.Popen([sys.executable, "-m", "devtools.liar", "--lie", lie, *args],
                                 stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(swarm._env), start_new_session=True)
    process = NodeProcess(name, popen, log, ready_file)
    swarm.servers.append(process)
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.liar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lie", choices=sorted(LIES), required=True, help="how the server's outputs lie")
    parser.add_argument("node_args", nargs=argparse.REMAINDER, help="swarm-node arguments (start ...)")
    args = parser.parse_args(argv)
    install(args.lie)
    from node.cli import main as node_main

    return node_main(args.node_args)


if __name__ == "__main__":
    sys.exit(main())
