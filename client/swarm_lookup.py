"""The user's commands reading the swarm map: join the DHT or say why not, explain a missing model.

`joined_dht` joins in client mode and raises `SwarmUnreachable` when no initial peer
answers (about one DHT request timeout, 1 s, for a silent address), instead of the
library's warnings and retries. `swarm_problem` reads the map of a model and says, in
one line, what keeps a route from existing: the model is not announced (and which
models are), or blocks have no live server (which ones). `swarm status`, `swarm
generate` and `swarm chat` share them, so they say the same thing the same way.

Not here: routing (`client.routing`) and printing the map (`client.status_command`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

from swarm.addresses import PeerAddress
from swarm.dht import DhtConfig, SwarmDHT, SwarmMap
from swarm.dht.swarm_map import AnnouncedModel
from swarm.errors import SwarmError

MAX_MODELS_LISTED = 8
"""Most other models a message names (a public swarm may serve many)."""

_JOIN_WARNINGS = ("swarm.dht.node", "swarm.dht.swarm_dht")
"""Loggers that warn about each silent initial peer: `SwarmUnreachable` says it once."""


class SwarmUnreachable(SwarmError):
    """No DHT node of the swarm answered at the initial peers."""


class NotOnSwarm(SwarmError):
    """The swarm does not serve the model asked for, or not all of its blocks."""


@contextlib.asynccontextmanager
async def joined_dht(peers: Sequence[PeerAddress], swarm_token: str | None,
                     timeout: float = 10.0) -> AsyncIterator[SwarmDHT]:
    """A client-mode DHT node joined through `peers`; `SwarmUnreachable` if none answered."""
    config = DhtConfig(client_mode=True, lookup_timeout=timeout, bootstrap_timeout=timeout,
                       swarm_token=swarm_token)
    with _quiet(_JOIN_WARNINGS):
        dht = await SwarmDHT.start("0.0.0.0", 0, peers, config=config)
    async with dht:
        if dht.num_peers == 0:
            private = "" if swarm_token else ", and if the swarm is private give its --swarm-token"
            raise SwarmUnreachable(f"no DHT node answered at {' '.join(map(str, peers))}; check --initial-peers "
                                   f"(HOST:PORT of a running swarm-node){private}")
        yield dht


async def swarm_problem(dht: SwarmDHT, model: str, num_blocks: int | None = None) -> str | None:
    """What keeps a route through `model` from existing, in one line; None if every block has a server.

    `num_blocks` is what the client's checkpoint says: a swarm model of another size is
    another model (a wrong --model or --model-name), whose route would end in NoRoute.
    """
    swarm_map = await dht.get_swarm_map(model)
    if swarm_map.num_blocks == 0:
        return f"model {model!r} is not served on this swarm; {await served_models(dht)}"
    if num_blocks is not None and num_blocks != swarm_map.num_blocks:
        return (f"the swarm's {model} has {swarm_map.num_blocks} blocks, the checkpoint given with --model has "
                f"{num_blocks}: pass --model the checkpoint its servers serve (or the --model-name of yours)")
    if swarm_map.complete:
        return None
    missing = block_spans(swarm_map.uncovered_blocks)
    what = "block" if len(swarm_map.uncovered_blocks) == 1 else "blocks"
    others = [i for i in await dht.list_models() if i.model != model][:MAX_MODELS_LISTED]
    also = f"; the swarm also serves: {', '.join(_shown(i) for i in others)}" if others else ""
    return (f"no live server holds {what} {missing} of {model} ({_served_part(swarm_map)}); "
            f"start a server for them (swarm-node start --model ... --blocks {missing.split(', ')[0]}) "
            f"or wait for one to join{also}")


_PICK_ONE = "pass --model-name with one of these (or --model with its checkpoint)"


async def served_models(dht: SwarmDHT, advice: str = _PICK_ONE) -> str:
    """'it serves: A (30 blocks, 2 servers), ...; ADVICE', or that it serves none."""
    infos = await dht.list_models()
    if not infos:
        return "no model is announced on it yet (servers announce within their --update-period)"
    shown = [_shown(i) for i in infos[:MAX_MODELS_LISTED]]
    more = f" and {len(infos) - MAX_MODELS_LISTED} more" if len(infos) > MAX_MODELS_LISTED else ""
    return f"it serves: {', '.join(shown)}{more}; {advice}"


def _shown(info: AnnouncedModel) -> str:
    return f"{info.model} ({info.num_blocks} blocks, {info.num_servers} server{'s' if info.num_servers != 1 else ''})"


def block_spans(blocks: Sequence[int]) -> str:
    """Block numbers as ranges the way flags take them: [4, 5, 9] -> '4:6, 9:10'."""
    spans: list[list[int]] = []
    for block in sorted(blocks):
        if spans and spans[-1][1] == block:
            spans[-1][1] = block + 1
        else:
            spans.append([block, block + 1])
    return ", ".join(f"{a}:{b}" for a, b in spans)


def _served_part(swarm_map: SwarmMap) -> str:
    covered = [b.block for b in swarm_map.blocks if b.covered]
    if not covered:
        return f"none of its {swarm_map.num_blocks} blocks has a live server"
    return f"live servers hold {block_spans(covered)} of its {swarm_map.num_blocks} blocks"


@contextlib.contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Raises the named loggers to ERROR for the block: the caller reports the outcome itself."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)
