"""The demo behind `scripts/demo`: a local swarm answers one chat prompt, then goes away.

Steps: prepare the default model (SmolLM2-135M-Instruct, converted once from its wheel),
start a DHT bootstrap node and three block servers (blocks 0:10, 10:20, 20:30) on
127.0.0.1, stream the answer of `swarm generate --chat` through them (it prints the
route and the speed), stop every process. Ctrl-C or SIGTERM at any point stops them too.

What it does not do: install anything (scripts/demo does), or leave processes behind.
What it prints are progress lines for a person (this is a command-line front end);
the processes' own logs go to files in the work directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from devtools.launcher import LocalSwarm, LocalSwarmConfig, LocalSwarmError, NodeProcess, sigterm_as_interrupt
from swarm.default_model import DefaultModelError, resolve_model
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "What is the capital of France?"
DEFAULT_SPANS = (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30))


def say(message: str) -> None:
    """One progress line for the person running the demo."""
    print(f"==> {message}", flush=True)


def swarm_command() -> list[str]:
    """The `swarm` CLI of this interpreter's environment."""
    script = Path(sys.executable).parent / "swarm"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "client.cli"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT,
                        help=f"what to ask (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    parser.add_argument("--model", default="default", help="checkpoint directory (default: SmolLM2)")
    parser.add_argument("--blocks", nargs="+", type=BlockRange.parse, default=list(DEFAULT_SPANS),
                        metavar="A:B", help="one server per range (default 0:10 10:20 20:30)")
    parser.add_argument("--workdir", type=Path, help="where the processes' logs go (default: a temp dir)")
    return parser.parse_args(argv)


def _announce(process: NodeProcess) -> None:
    if process.name == "dht":
        say(f"DHT bootstrap node listening on {process.address} ({process.ready_after:.1f} s)")
    else:
        say(f"{process.name} ready at {process.address} ({process.ready_after:.1f} s)")


def run_demo(args: argparse.Namespace) -> int:
    began = time.monotonic()
    model = resolve_model(args.model)  # scripts/demo has prepared the default model already
    spans = tuple(args.blocks)
    config = LocalSwarmConfig(model, spans, workdir=args.workdir, server_args=("--drain-grace", "5"))
    swarm = LocalSwarm(config, on_ready=_announce)
    say(f"Starting a DHT bootstrap node and {len(spans)} servers ({', '.join(map(str, spans))}) "
        f"on 127.0.0.1; logs in {swarm.workdir}")
    with swarm:
        say(f"Swarm ready in {time.monotonic() - began:.1f} s. Asking: {args.prompt}")
        command = [*swarm_command(), "generate", "--initial-peers", *swarm.initial_peers,
                   "--model", model, "--prompt", args.prompt, "--chat",
                   "--max-new-tokens", str(args.max_new_tokens)]
        # the client's INFO lines would interleave with the streamed answer
        env = {**os.environ, "SWARM_LOG_LEVEL": os.environ.get("SWARM_LOG_LEVEL", "WARNING")}
        print(flush=True)
        code = subprocess.run(command, env=env, check=False).returncode
        stopping = time.monotonic()
        say(f"Stopping {len(swarm.processes)} processes ...")
    say(f"Stopped in {time.monotonic() - stopping:.1f} s. Demo took {time.monotonic() - began:.1f} s.")
    if code != 0:
        say(f"swarm generate failed with status {code}; logs in {swarm.workdir}")
    return code


def main(argv: list[str] | None = None) -> int:
    from swarm.logs import setup_logging

    args = parse_args(argv)
    setup_logging()
    if "SWARM_LOG_LEVEL" not in os.environ:  # the progress lines say what INFO would
        logging.getLogger().setLevel(logging.WARNING)
    try:
        with sigterm_as_interrupt():
            return run_demo(args)
    except KeyboardInterrupt:
        say("Interrupted: every process the demo started is stopped.")
        return 130
    except (LocalSwarmError, DefaultModelError) as error:
        say(f"Demo failed: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
