"""`scripts/simulate`: command-line arguments in, the report out (text or --json)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from devtools.simulation.report import format_table, simulate
from devtools.simulation.trace import SimulationConfig


def build_parser() -> argparse.ArgumentParser:
    """The arguments; each fills the SimulationConfig field of the same meaning."""
    d = SimulationConfig()
    p = argparse.ArgumentParser(
        prog="simulate",
        description="Simulates a churning swarm under three placement policies "
        "(rebalance, random, greedy) and reports throughput against an upper bound.",
    )
    p.add_argument("--servers", type=int, default=d.servers, help="servers, e.g. 100..1000")
    p.add_argument("--blocks", type=int, default=d.blocks, help="blocks in the model")
    p.add_argument("--hours", type=float, default=d.hours, help="simulated hours")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every random draw")
    p.add_argument("--churn", type=float, default=d.churn, help="leaves per server per hour")
    p.add_argument(
        "--balance-period", type=float, default=d.balance_period_s, help="seconds between checks"
    )
    p.add_argument(
        "--balance-quality", type=float, default=d.balance_quality, help="in (0, 1]; 1 moves most"
    )
    p.add_argument("--load-seconds", type=float, default=d.load_s, help="block loading time")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs one simulation and prints its report; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = SimulationConfig(
        servers=args.servers,
        blocks=args.blocks,
        hours=args.hours,
        seed=args.seed,
        churn=args.churn,
        balance_period_s=args.balance_period,
        balance_quality=args.balance_quality,
        load_s=args.load_seconds,
    )
    try:
        config.check()
    except ValueError as e:
        parser.error(str(e))
    result = simulate(config)
    print(json.dumps(asdict(result), indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
