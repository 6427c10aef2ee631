"""`scripts/bench local`: the default model through a loopback swarm vs. in one process.

Starts a DHT node and three block servers (0:10, 10:20, 20:30) of SmolLM2-135M-Instruct
on 127.0.0.1 (or uses a running swarm: --initial-peers), loads the same checkpoint
locally with transformers, and times them in rounds. Within a round the multi-process
contenders (the swarm both ways and the two floors) decode in lockstep
(`devtools.bench.workloads.lockstep`: one step of each in turn, so that each token's
figures are taken within a fraction of a second of each other and the machine's drift
over seconds hits all alike), in an order that rotates from round to round; the local
reference decodes on its own, after them in odd rounds and before them in even ones, as
a transformers user decodes (stepping it between the others would slow it by several ms
per token, its weights and threads gone cold, and flatter the ratios):

- per-token latency of greedy decoding (batch 1, float32, same chat prompt, same number
  of tokens; transformers with a DynamicCache locally) -- the figure with a target --
  through the default chained route (servers push to the next one) and, for
  information, with the client relaying every hop;
- the same decoding through a pipe floor (`devtools.bench.pipe_floor`): the same block
  ranges in worker processes joined by OS pipes, no gRPC -- what any split of the model
  over processes costs on this machine, i.e. the best a swarm could do here;
- and through a gRPC floor (`devtools.bench.grpc_floor`): those workers joined by gRPC
  aio streams as the servers are, with none of the swarm's own work -- what gRPC itself
  adds to the pipes, so that the swarm's messaging splits into gRPC's part and ours;
- a batch forward of 1 x 128 tokens through `model.layers` (stateless Forward calls)
  vs. the local model's forward, for information.

It prints medians over rounds and the swarm/local ratios, and checks that both sides
produced the same tokens. Progress goes to stderr, the report to stdout (--json: one
JSON object).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from devtools.bench import cpu_time
from devtools.bench.common import WORKDIR_ENV, chat_ids, progress, quiet_logging
from devtools.bench.grpc_floor import GrpcFloor
from devtools.bench.pipe_floor import PipeFloor
from devtools.bench.stats import Comparison, format_table, per_token, rotating_order
from devtools.bench.workloads import Contender, Decoder, GreedySteps, LocalReference, SwarmContender, lockstep
from devtools.launcher import LocalSwarm, LocalSwarmConfig, shared_cpu_env, sigterm_as_interrupt
from swarm.records import BlockRange

logger = logging.getLogger(__name__)

TARGET_RATIO = 1.15
"""What the swarm's per-token latency may cost over the local run on loopback."""
TARGET_MESSAGING_MS = 0.7
"""What the swarm's messaging may add per server and token over the pipe floor (issue 14)."""
BENCH_SERVER_ENV = {"GOMP_SPINCOUNT": "0"}
"""The servers' and the floor workers' environment unless --server-env names the variable.
OpenMP threads that spin after each op (SHARED_CPU_ENV's 100000 spins) steal the core the
next process needs the moment a hidden state reaches it: the pipe floor, whose hand-off is
fastest, suffered most (measured at load average ~5 from other work: 46-161 ms per token
with 100000, 40.6-41.5 ms with 0), so the split measured nothing. Both sides get the same."""
DEFAULT_PROMPT = "What is the capital of France?"
DEFAULT_SPANS = (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 30))
REFERENCE = "local"
"""The contender that decodes in this process, on its own (not in lockstep)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory (default: SmolLM2)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, order rotating (default 6)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per round (default 32)")
    parser.add_argument("--forward-tokens", type=int, default=128, help="batch forward length (default 128)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message, chat template applied")
    parser.add_argument("--blocks", nargs="+", type=BlockRange.parse, default=list(DEFAULT_SPANS),
                        metavar="A:B", help="one server per range (default 0:10 10:20 20:30)")
    parser.add_argument("--initial-peers", nargs="+", metavar="HOST:PORT",
                        help="use this running swarm instead of starting one")
    parser.add_argument("--workdir", type=Path, default=os.environ.get(WORKDIR_ENV) or None,
                        help=f"servers' logs and pids file (default: ${WORKDIR_ENV} or a temp dir)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for the servers and the floor's workers only (repeat), e.g. "
                             "OMP_NUM_THREADS=1; default: devtools.launcher.SHARED_CPU_ENV and "
                             f"{' '.join(f'{k}={v}' for k, v in BENCH_SERVER_ENV.items())}")
    parser.add_argument("--wire-compression", default=None, metavar="KIND",
                        help="the swarm clients' ClientConfig.wire_compression (default: ClientConfig's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def messaging_per_server(swarm: Comparison, floor: Comparison, servers: int) -> list[float]:
    """Per round: (swarm - floor seconds per token) / servers, what the swarm's messaging adds
    per server over the pipe floor (both timed in the same round). The same with the gRPC
    floor for `swarm` splits it: gRPC's part (gRPC floor over the pipe floor) and ours."""
    return [(s - f) / servers for s, f in zip(swarm.a, floor.a)]


def measure(contenders: dict[str, Decoder], forwarders: dict[str, Contender], args: argparse.Namespace,
            prompt_ids: torch.Tensor, forward_ids: torch.Tensor, pids: dict[str, list[int]]) -> dict[str, Any]:
    """Warm-up, then rounds in rotating order: decoding (in lockstep but for the local
    reference), batch forwards for two. The CPU time per step of the contenders in `pids`
    (their processes; this one apart) is metered too."""
    progress("warming up")
    for contender in contenders.values():
        contender.decode(prompt_ids, 4)
    for forwarder in forwarders.values():
        forwarder.forward(forward_ids)
    decode: dict[str, list[float]] = {name: [] for name in contenders}
    typical: dict[str, list[float]] = {name: [] for name in contenders}  # each round's median step
    prefill: dict[str, list[float]] = {name: [] for name in contenders}
    forward: dict[str, list[float]] = {name: [] for name in forwarders}
    tokens: dict[str, list[tuple[int, ...]]] = {name: [] for name in contenders}
    logits: dict[str, torch.Tensor] = {}
    cpu: dict[str, dict[str, list[float]]] = {name: {"client": [], "servers": []} for name in pids}
    """Per contender, CPU seconds per token in each round: this process's and its others'."""
    split = [name for name in contenders if name != REFERENCE]
    for number, order in enumerate(rotating_order(args.rounds, split), 1):
        runs = {} if number % 2 else {REFERENCE: contenders[REFERENCE].decode(prompt_ids, args.tokens)}
        runs.update(lockstep({name: _metered(contenders[name].decoding(prompt_ids, args.tokens), pids.get(name),
                                             cpu.get(name)) for name in order}))
        if REFERENCE not in runs:
            runs[REFERENCE] = contenders[REFERENCE].decode(prompt_ids, args.tokens)
        for name, run in runs.items():
            tokens[name].append(run.tokens)
            decode[name].append(per_token(run.step_seconds, len(run.step_seconds)))
            typical[name].append(statistics.median(run.step_seconds))
            prefill[name].append(run.prefill_seconds)
        # (the reference after the others in odd rounds, before them in even ones, as it decoded)
        for name in sorted(forwarders, key=lambda n: (n == REFERENCE) == bool(number % 2)):
            seconds, logits[name] = forwarders[name].forward(forward_ids)
            forward[name].append(seconds)
        progress(f"round {number}/{args.rounds}: per token " +
                 ", ".join(f"{name} {decode[name][-1] * 1e3:.1f} ms" for name in contenders))
    reference = tokens[REFERENCE][0]

    def versus(label: str, name: str, figures: dict[str, list[float]]) -> Comparison:
        return Comparison(label, tuple(figures[name]), tuple(figures[REFERENCE]))

    return {
        "rows": [
            versus("per-token latency (decode)", "swarm", decode),
            versus("  unchained (client relays)", "unchained", decode),
            versus("  floor: pipes, no swarm", "floor", decode),
            versus("  floor: gRPC streams, no swarm", "grpc", decode),
            versus(f"prefill ({prompt_ids.shape[1]} tokens)", "swarm", prefill),
            versus(f"batch forward 1x{args.forward_tokens}", "swarm", forward),
        ],
        "typical": [versus("median step", name, typical) for name in ("swarm", "floor")],
        "cpu": cpu,
        "same_tokens": all(t == reference for runs in tokens.values() for t in runs),
        "logits_max_diff": float((logits["swarm"].float() - logits[REFERENCE].float()).abs().max()),
        "tokens": list(reference),
    }


def _metered(steps: GreedySteps, pids: list[int] | None, rounds: dict[str, list[float]] | None) -> GreedySteps:
    """A decoding whose steps' CPU time goes to `rounds` (one mean per token and round, this
    process as "client" and `pids` as "servers"); as it is without `pids`."""
    if pids is None or rounds is None:
        return (yield from steps)
    per_step: dict[str, list[float]] = {"client": [], "servers": []}
    run = yield from cpu_time.metered(steps, {"client": [os.getpid()], "servers": pids}, per_step)
    for name, seconds in per_step.items():
        rounds[name].append(statistics.fmean(seconds))
    return run


def cpu_lines(cpu: dict[str, dict[str, list[float]]], servers: int) -> list[str]:
    """What each contender's processes spent in CPU per token (medians over rounds), and the
    swarm's excess over the floors; nothing when it was not metered."""
    if "swarm" not in cpu or not cpu["swarm"]["client"]:
        return []
    med = {name: {part: statistics.median(rounds) * 1e3 for part, rounds in parts.items()}
           for name, parts in cpu.items()}
    total = {name: parts["client"] + parts["servers"] for name, parts in med.items()}
    lines = ["CPU per token (all threads, /proc schedstat; medians over rounds), this process + the contender's "
             "others: " + ", ".join(f"{name} {med[name]['client']:.1f} + {med[name]['servers']:.1f} = "
                                    f"{total[name]:.1f} ms" for name in med)]
    for floor in (name for name in ("floor", "grpc") if name in med):
        lines.append(f"  swarm over {floor}: {total['swarm'] - total[floor]:+.2f} ms per token (this process "
                     f"{med['swarm']['client'] - med[floor]['client']:+.2f}, servers per server "
                     f"{(med['swarm']['servers'] - med[floor]['servers']) / servers:+.2f})")
    return lines


def report(result: dict[str, Any], args: argparse.Namespace, route: str, prompt_tokens: int) -> str:
    rows: list[Comparison] = result["rows"]
    swarm, floor, grpc_floor = rows[0], rows[2], rows[3]
    overhead, split = swarm.median_a - swarm.median_b, floor.median_a - floor.median_b
    servers = len(args.blocks)
    per_server = messaging_per_server(swarm, floor, servers)
    median_ms = statistics.median(per_server) * 1e3
    grpc_part = [x * 1e3 for x in messaging_per_server(grpc_floor, floor, servers)]
    ours = [x * 1e3 for x in messaging_per_server(swarm, grpc_floor, servers)]
    typical = messaging_per_server(result["typical"][0], result["typical"][1], servers)
    lines = [
        f"swarm-llm bench local: {Path(args.model_path).name}, float32, batch 1, greedy, "
        f"{args.tokens} decode steps after a {prompt_tokens}-token chat prompt; {args.rounds} rounds, "
        f"order rotating; medians over rounds",
        f"swarm: {len(args.blocks)} server processes on 127.0.0.1, chained (servers push to the next), "
        f"route {route}, wire compression {args.wire_compression_used}",
        f"local: transformers AutoModelForCausalLM + DynamicCache in this process; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}",
        f"floor: the same ranges in {len(args.blocks)} worker processes joined by OS pipes, running the "
        f"servers' step code with no gRPC, asyncio or checks: what splitting the model over processes "
        f"costs on this machine, whatever the protocol; servers' and workers' environment: "
        f"{' '.join(f'{k}={v}' for k, v in args.server_env_map.items())}",
        "gRPC floor: those workers joined by gRPC aio streams (raw frames, uvloop, steps on the event loop, "
        "the client on a background loop as the swarm's), none of the swarm's own work",
        "",
        format_table(rows, "swarm", "local", TARGET_RATIO, rows[0].name),
        "",
        f"same greedy tokens everywhere in every round: {'yes' if result['same_tokens'] else 'NO'}; "
        f"batch-forward logits max |swarm - local| = {result['logits_max_diff']:.2e}",
        f"per-token cost over local: swarm {overhead * 1e3:+.1f} ms = the split itself (floor) "
        f"{split * 1e3:+.1f} ms + the swarm's messaging {(overhead - split) * 1e3:+.1f} ms "
        f"({(overhead - split) * 1e3 / len(args.blocks):+.1f} ms per server)",
        f"messaging per server (swarm - floor) / {len(args.blocks)}: median over rounds {median_ms:.2f} ms "
        f"(rounds {', '.join(f'{x * 1e3:.2f}' for x in per_server)})   target <= {TARGET_MESSAGING_MS} ms: "
        f"{'met' if median_ms <= TARGET_MESSAGING_MS else 'NOT met'}",
        f"  of which gRPC itself (gRPC floor - floor) / {servers}: median {statistics.median(grpc_part):.2f} ms "
        f"(rounds {', '.join(f'{x:.2f}' for x in grpc_part)})",
        f"  and the swarm's own work (swarm - gRPC floor) / {servers}: median {statistics.median(ours):.2f} ms "
        f"(rounds {', '.join(f'{x:.2f}' for x in ours)})",
        f"  the same from each round's median step instead of its mean (a slow step moves a mean a lot): "
        f"median {statistics.median(typical) * 1e3:.2f} ms (rounds {', '.join(f'{x * 1e3:.2f}' for x in typical)})",
        *cpu_lines(result["cpu"], servers),
    ]
    return "\n".join(lines)


def as_json(result: dict[str, Any], args: argparse.Namespace, route: str) -> str:
    rows: list[Comparison] = result["rows"]
    per_server = messaging_per_server(rows[0], rows[2], len(args.blocks))
    grpc_part = messaging_per_server(rows[3], rows[2], len(args.blocks))
    ours = messaging_per_server(rows[0], rows[3], len(args.blocks))
    return json.dumps({
        "model": Path(args.model_path).name, "tokens": args.tokens, "rounds": args.rounds,
        "route": route, "target_ratio": TARGET_RATIO, "same_tokens": result["same_tokens"],
        "wire_compression": args.wire_compression_used, "messaging_per_server_s": per_server,
        "messaging_per_server_median_s": statistics.median(per_server),
        "grpc_per_server_s": grpc_part, "grpc_per_server_median_s": statistics.median(grpc_part),
        "swarm_own_per_server_s": ours, "swarm_own_per_server_median_s": statistics.median(ours),
        "messaging_per_server_from_median_steps_s": messaging_per_server(result["typical"][0], result["typical"][1],
                                                                         len(args.blocks)),
        "cpu_per_token_s": result["cpu"],
        "logits_max_diff": result["logits_max_diff"], "load_average": os.getloadavg()[0],
        "rows": [{**asdict(r), "median_swarm_s": r.median_a, "median_local_s": r.median_b,
                  "ratio": r.ratio, "paired_ratio": r.paired_ratio} for r in rows],
    })


def run_bench(args: argparse.Namespace, peers: list[str], server_pids: list[int] | None = None) -> None:
    """`server_pids`: the swarm's processes when this bench started them (their CPU is metered)."""
    from client.config import ClientConfig
    from client.model import AutoDistributedModelForCausalLM
    from client.routing import RoutingConfig
    from swarm.addresses import PeerAddress

    prompt_ids = chat_ids(args.model_path, args.prompt)
    progress("loading the local reference and the swarm clients")
    local = LocalReference(args.model_path)
    addresses = tuple(PeerAddress.parse(p) for p in peers)
    chained_config = ClientConfig(addresses)
    if args.wire_compression is not None:
        chained_config = replace(chained_config, wire_compression=args.wire_compression)
    args.wire_compression_used = chained_config.wire_compression
    chained = AutoDistributedModelForCausalLM.from_pretrained(args.model_path, peers, config=chained_config)
    unchained_config = replace(chained_config, routing=RoutingConfig(chained=False))
    unchained = AutoDistributedModelForCausalLM.from_pretrained(args.model_path, peers, config=unchained_config)
    vocab = int(local.model.config.vocab_size)
    forward_ids = torch.randint(0, vocab, (1, args.forward_tokens), generator=torch.Generator().manual_seed(0))
    progress(f"starting the pipe floor and the gRPC floor: {len(args.blocks)} worker processes each")
    with contextlib.ExitStack() as owned:
        owned.callback(unchained.close)
        owned.callback(chained.close)
        floor = PipeFloor(args.model_path, args.blocks, shared_cpu_env(args.server_env_map), head=chained.head)
        owned.callback(floor.close)
        grpc_floor = GrpcFloor(args.model_path, args.blocks, shared_cpu_env(args.server_env_map), head=chained.head)
        owned.callback(grpc_floor.close)
        swarm = SwarmContender(chained)
        result = measure({"swarm": swarm, "unchained": SwarmContender(unchained), "floor": floor,
                          "grpc": grpc_floor, "local": local},
                         {"swarm": swarm, "local": local}, args, prompt_ids, forward_ids,
                         _pids(server_pids, floor, grpc_floor))
    if args.json:
        print(as_json(result, args, swarm.route))
    else:
        print(report(result, args, swarm.route, prompt_ids.shape[1]))


def _pids(server_pids: list[int] | None, floor: PipeFloor, grpc_floor: GrpcFloor) -> dict[str, list[int]]:
    """The processes to meter per contender: none where the swarm runs elsewhere or the
    system does not tell threads' run times."""
    if server_pids is None or not cpu_time.available():
        return {}
    return {"swarm": server_pids, "unchained": server_pids, "floor": floor.pids, "grpc": grpc_floor.pids}


def main(argv: list[str] | None = None) -> int:
    from swarm.default_model import resolve_model

    args = parse_args(argv)
    quiet_logging()
    began = time.monotonic()
    args.model_path = resolve_model(args.model)
    args.server_env_map = {**BENCH_SERVER_ENV, **dict(item.split("=", 1) for item in args.server_env)}
    try:
        with sigterm_as_interrupt():
            if args.initial_peers:
                run_bench(args, args.initial_peers)
            else:
                progress(f"starting a DHT node and {len(args.blocks)} servers on 127.0.0.1")
                config = LocalSwarmConfig(args.model_path, tuple(args.blocks), workdir=args.workdir,
                                          server_args=("--drain-grace", "5"), env=args.server_env_map)
                with LocalSwarm(config) as swarm:
                    progress(f"swarm ready (logs in {swarm.workdir})")
                    run_bench(args, swarm.initial_peers, [p.pid for p in swarm.processes])
    except KeyboardInterrupt:
        progress("interrupted; every process the bench started is stopped")
        return 130
    progress(f"done in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
