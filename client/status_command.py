"""`swarm status`: show which servers cover which blocks of the models on a swarm.

Joins the DHT in client mode (peers do not add it to their tables), looks up the models
announced (or the one asked for), and prints, per model, its servers (short id, address,
state, blocks, speeds, free cache) and each block's covering servers, with blocks that
no ONLINE server holds flagged. `--json` prints the shape documented in
docs/status-json.md instead. A private swarm's DHT needs its token (`--swarm-token` or
$SWARM_TOKEN); status reads only the DHT, so it needs no TLS file. Exit code: 0, or 1
(and one line on stderr) when no DHT peer answers or the model asked for is not on the
swarm; 0 also when the reader of its output leaves early (`swarm status --json | head`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from client.config import ClientConfig, command_line_peers
from client.swarm_lookup import NotOnSwarm, joined_dht, served_models
from swarm import settings
from swarm.addresses import PeerAddress
from swarm.config_flags import add_config_flags
from swarm.dht import SwarmDHT, SwarmMap
from swarm.dht.swarm_map import BlockCoverage

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Adds the `status` subcommand to `swarm`."""
    parser = subparsers.add_parser(
        "status", help="show the swarm's servers and block coverage", description=__doc__
    )
    add_config_flags(parser, ClientConfig, only=("initial_peers", "swarm_token"))
    parser.add_argument("--model", default=None, help="show only this model")
    parser.add_argument("--json", action="store_true", help="print JSON (see docs/status-json.md)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for joining and for each lookup")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Looks the swarm up and prints it; returns the exit code."""
    from swarm.cli import run_event_loop  # the one uvloop-or-asyncio runner

    token = args.swarm_token or settings.swarm_token()
    peers = command_line_peers(args.initial_peers)
    return run_event_loop(lambda: status(peers, args.model, args.json, args.timeout, token))


async def fetch_maps(dht: SwarmDHT, model: str | None) -> list[SwarmMap]:
    """The swarm map of `model`, or of every model announced."""
    if model is not None:
        return [await dht.get_swarm_map(model)]
    infos = await dht.list_models()
    return list(await asyncio.gather(*(dht.get_swarm_map(info.model) for info in infos)))


async def status(
    initial_peers: tuple[PeerAddress, ...], model: str | None, as_json: bool, timeout: float,
    swarm_token: str | None = None,
) -> int:
    """Prints the swarm maps (of a private swarm with `swarm_token`); returns the exit code.

    `SwarmUnreachable` when no DHT node answers; `NotOnSwarm` (naming the models the
    swarm does serve) when `model` is not announced, after printing what was found.
    """
    async with joined_dht(initial_peers, swarm_token, timeout) as dht:
        maps = await fetch_maps(dht, model)
        found = [m for m in maps if m.num_blocks > 0]
        advice = "pass --model with one of these, or leave it out to see them all"
        others = await served_models(dht, advice) if model is not None and not found else ""
    if as_json:
        print(json.dumps({"models": [m.to_json_dict() for m in found]}, indent=2))
    elif not found:
        missing = f"Model {model!r} is not on this swarm."
        print("No models are announced on this swarm." if model is None else missing)
    else:
        print("\n\n".join(render_swarm_map(m) for m in found))
    if model is not None and not found:
        raise NotOnSwarm(f"model {model!r} is not announced on the swarm; {others}")
    return 0


def render_swarm_map(swarm: SwarmMap) -> str:
    """The human-readable view of one model's swarm."""
    totals = swarm.totals()
    online = sum(1 for s in swarm.servers if s.live)
    gaps = len(swarm.uncovered_blocks)
    verdict = "complete" if swarm.complete else f"INCOMPLETE: {gaps} blocks without a live server"
    lines = [
        f"{swarm.model}: {swarm.num_blocks} blocks, hidden size {swarm.hidden_size}; "
        f"{totals.servers} servers ({online} online); "
        f"{totals.covered_blocks}/{swarm.num_blocks} blocks covered, {verdict}",
        f"  {'server':<8}  {'address':<21}  {'state':<8}  {'blocks':<9}  "
        f"{'infer tok/s':>11}  {'fwd tok/s':>10}  {'free cache':>10}",
    ]
    for s in swarm.servers:
        lines.append(
            f"  {s.short_id:<8}  {s.address:<21}  {s.state.name.lower():<8}  {str(s.blocks):<9}  "
            f"{s.inference_tokens_per_s:>11.1f}  {s.forward_tokens_per_s:>10.1f}  {s.free_cache_tokens:>10}"
        )
    lines.append("  blocks:")
    lines.extend(f"    {span:<9}  {holders}" for span, holders in _block_spans(swarm.blocks))
    lines.append(
        f"  slowest block: {totals.min_block_inference_tokens_per_s:.1f} tok/s over its online servers; "
        f"fewest online servers on a block: {totals.min_online_servers_per_block}"
    )
    return "\n".join(lines)


def _holders(coverage: BlockCoverage) -> str:
    names = [s.short_id if s.live else f"{s.short_id}({s.state.name.lower()})" for s in coverage.servers]
    text = " ".join(names)
    return text if coverage.covered else f"-- NO LIVE SERVER -- {text}".rstrip()


def _block_spans(blocks: tuple[BlockCoverage, ...]) -> list[tuple[str, str]]:
    """Consecutive blocks with the same holders, as ("3-7", holders) rows."""
    spans: list[tuple[int, int, str]] = []
    for coverage in blocks:
        text = _holders(coverage)
        if spans and spans[-1][2] == text and spans[-1][1] == coverage.block - 1:
            spans[-1] = (spans[-1][0], coverage.block, text)
        else:
            spans.append((coverage.block, coverage.block, text))
    return [(str(a) if a == b else f"{a}-{b}", text) for a, b, text in spans]
