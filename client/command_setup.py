"""What `swarm generate` and `swarm chat` share: cheap checks first, then loading, and why no route.

`check_target` runs before torch is imported: --model must be a checkpoint directory or
a reachable hub id (`swarm.model.source`), a DHT node must answer at --initial-peers,
and the swarm must have a live server for every block of the model (else the error names
the missing blocks, or the models the swarm does serve). On a loopback swarm that takes
well under a second; an unreachable DHT costs one DHT request timeout (1 s).

A route can still vanish afterwards (servers leave); `explained` turns the `NoRoute`
that generation then raises into the same message, read from the DHT again.

`run_with_model` is the commands' shell: checks, loading, the work, and closing.

Not here: sampling and printing (the commands), routing (`client.routing`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from client.config import ClientConfig, command_line_peers
from client.swarm_lookup import NotOnSwarm, joined_dht, swarm_problem
from swarm.cli import run_event_loop
from swarm.config_flags import config_from_args
from swarm.errors import NoRoute, SwarmError
from swarm.model.source import ModelUnavailable, check_model_source
from swarm.model_names import model_name_of

if TYPE_CHECKING:
    from client.model import DistributedModelForCausalLM

CLIENT_FLAGS = ("initial_peers", "tls_ca", "swarm_token", "verify_fraction", "adapter", "quantization",
                "wire_compression")
"""The `ClientConfig` fields `swarm generate` and `swarm chat` take as flags."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, refused with the reason."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def draft_tokens(text: str) -> int:
    """--speculative: a whole number >= 0 (0 turns speculative decoding off)."""
    return 0 if text.strip() == "0" else positive_int(text)


def add_speculative_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--speculative", type=draft_tokens, default=None, metavar="N",
                        help=f"speculative decoding: draft up to N tokens per step by prompt lookup, verified in "
                             f"one round trip (0: off; default: auto, up to 8, {what})")


def ranged_float(low: float, high: float = float("inf"), *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a number in [low, high] ((low, high] when `low_open`), refused with the reason."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value > low if low_open else value >= low) or value > high or value != value:
            bound = f"more than {low:g}" if low_open else f"at least {low:g}"
            upper = f" and at most {high:g}" if high != float("inf") else ""
            raise argparse.ArgumentTypeError(f"must be {bound}{upper}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


@dataclass(frozen=True)
class Target:
    """The model a client command runs, checked."""

    path: str
    """Checkpoint directory or hub id the client loads its tokenizer, embeddings and head from."""
    name: str
    """The model's name on the swarm (what servers announce)."""
    config: ClientConfig
    """The client's settings from the command line."""
    num_blocks: int | None = None
    """Blocks per the checkpoint's config.json (None: it does not say)."""


def check_target(args: argparse.Namespace) -> Target:
    """The checked model and swarm; raises a one-line error (`swarm.cli_edge`) if unusable."""
    source = check_model_source(args.model)
    config = config_from_args(ClientConfig, args)
    config = replace(config, initial_peers=command_line_peers(config.initial_peers))
    target = Target(source.path, args.model_name or model_name_of(source.path), config, source.num_blocks)
    check_swarm(target)
    return target


def check_swarm(target: Target) -> None:
    """`SwarmUnreachable` or `NotOnSwarm` unless every block of the model has a live server."""
    security = target.config.load_security()  # a bad --tls-ca or token: said now, not after loading

    async def look() -> int:
        async with joined_dht(target.config.initial_peers, security.swarm_token, target.config.dht_timeout) as dht:
            problem = await swarm_problem(dht, target.name, target.num_blocks)
        if problem is not None:
            raise NotOnSwarm(problem)
        return 0

    run_event_loop(look)


def explained(error: NoRoute, target: Target) -> SwarmError:
    """`error` with what the swarm map says about it (missing blocks, other models), if it says more."""
    try:
        check_swarm(target)
    except SwarmError as better:
        return better
    return error  # every block has a live server: bans or load, and NoRoute says which block


def load(target: Target) -> tuple[Any, DistributedModelForCausalLM]:
    """The tokenizer and the distributed model (torch and transformers load here)."""
    from transformers import AutoTokenizer

    from client.model import AutoDistributedModelForCausalLM

    try:
        tokenizer = AutoTokenizer.from_pretrained(target.path)
    except (OSError, ValueError) as error:
        raise ModelUnavailable(f"cannot load the tokenizer of {target.path} ({error}); the client needs the "
                               "checkpoint's tokenizer files next to its config.json") from None
    model = AutoDistributedModelForCausalLM.from_pretrained(target.path, target.config.initial_peers,
                                                            model_name=target.name, config=target.config)
    return tokenizer, model


def run_with_model(args: argparse.Namespace,
                   work: Callable[[argparse.Namespace, Any, DistributedModelForCausalLM], None]) -> int:
    """Checks the target, loads the tokenizer and model, runs `work` and closes the model; a
    route lost meanwhile is explained from the swarm map. Returns the exit status (0)."""
    target = check_target(args)  # cheap checks first: model, DHT, a server for every block
    tokenizer, model = load(target)  # torch and transformers load only here (status stays fast)
    try:
        work(args, tokenizer, model)
    except NoRoute as error:  # the swarm changed since the check: say what it lacks now
        raise explained(error, target) from error
    finally:
        model.close()
    return 0
