"""The swarm simulator: its trace, its bookkeeping, and the headline result.

The headline test is the acceptance check of the rebalancing policy: 200 heterogeneous
servers under churn, rebalancing within 10% of the upper bound once settled, ahead of
both baselines, each server moving rarely.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, replace

import pytest

from node.placement.bounds import average_bound
from devtools.simulation import (
    POLICIES,
    SimulationConfig,
    format_table,
    make_trace,
    replay,
    simulate,
)
from devtools.simulation.__main__ import main


def test_trace_is_seeded_ordered_and_consistent() -> None:
    config = SimulationConfig(servers=100, hours=3.0, churn=1.0)
    trace = make_trace(config, random.Random(4))
    assert trace == make_trace(config, random.Random(4))
    assert trace != make_trace(config, random.Random(5))
    assert [e.time_s for e in trace] == sorted(e.time_s for e in trace)
    joined: dict[str, float] = {}
    for e in trace:
        if e.kind == "join":
            assert e.server.server_id not in joined
            joined[e.server.server_id] = e.time_s
        else:
            assert e.kind == "leave" and joined[e.server.server_id] <= e.time_s
    low, high = config.server_blocks_range()
    assert (low, high) == (4, 15)
    sizes = Counter(e.server.num_blocks for e in trace)
    assert set(sizes) == set(range(low, high + 1))
    assert all(e.server.throughput > 0 for e in trace)
    assert len(trace) < 1000  # 100 initial + ~300 churn joins, and their leaves


def test_population_hovers_near_the_target() -> None:
    config = SimulationConfig(servers=200, hours=4.0, churn=1.0)
    trace = make_trace(config, random.Random(0))
    present, counts = 0, []
    for e in trace:
        present += 1 if e.kind == "join" else -1
        if e.time_s > config.ramp_s:
            counts.append(present)
    assert 0.75 * 200 < min(counts) and max(counts) < 1.25 * 200


def test_bound_and_population_come_from_the_trace_alone() -> None:
    config = SimulationConfig(servers=100, hours=1.0, sample_s=600.0)
    trace = make_trace(config, random.Random(1))
    samples = [replay(p, trace, config, random.Random(9)).samples for p in POLICIES]
    assert [s[1:] for s in samples[0]] == [s[1:] for s in samples[1]] == [s[1:] for s in samples[2]]
    # Cross-check the last sample's bound against the formula, from the trace itself.
    present: dict[str, tuple[float, int]] = {}
    for e in trace:
        if e.time_s > 3600.0:
            break
        if e.kind == "join":
            present[e.server.server_id] = (e.server.throughput, e.server.num_blocks)
        else:
            del present[e.server.server_id]
    assert samples[0][-1][1] == pytest.approx(average_bound(present.values(), 30), rel=1e-4)
    assert samples[0][-1][2] == len(present)


def test_rebalancing_meets_the_bound_and_beats_the_baselines() -> None:
    config = SimulationConfig(servers=200, hours=3.0, seed=0)
    result = simulate(config)
    rebalance, random_join, greedy = (result.policy(p) for p in ("rebalance", "random", "greedy"))
    assert rebalance.settled_ratio >= 0.90
    assert rebalance.settled_ratio > greedy.settled_ratio + 0.01
    assert rebalance.settled_ratio > random_join.settled_ratio + 0.2
    assert 0 < rebalance.migrations_per_server_hour < 0.5
    assert rebalance.uncovered_fraction == 0.0
    assert greedy.migrations == random_join.migrations == 0


def test_no_churn_no_drift() -> None:
    """Without churn a greedy swarm never changes, and its throughput holds."""
    config = SimulationConfig(servers=100, hours=1.5, churn=0.0, sample_s=900.0)
    result = simulate(config)
    greedy = result.policy("greedy")
    assert len(set(result.servers)) == 1
    assert len(set(greedy.throughput)) == 1
    assert greedy.worst_settled_ratio == pytest.approx(greedy.settled_ratio)


def test_report_as_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    result = simulate(SimulationConfig(servers=100, hours=1.0, settle_hours=0.5))
    table = format_table(result)
    lines = table.splitlines()
    assert "rebalance" in lines[1] and "random" in lines[1] and "greedy" in lines[1]
    assert lines[2].split()[0] == "0.50" and lines[3].split()[0] == "1.00"
    for label in ("mean % of bound", "migrations/server-h", "time uncovered"):
        assert any(line.startswith(label) for line in lines)
    assert json.loads(json.dumps(asdict(result)))["config"]["servers"] == 100
    unsettled = format_table(replace(result, config=replace(result.config, settle_hours=2.0)))
    assert "mean % of bound" not in unsettled  # nothing to average before settle_hours

    assert main(["--servers", "100", "--hours", "0.5", "--seed", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["seed"] == 3
    assert [p["policy"] for p in printed["policies"]] == list(POLICIES)


@pytest.mark.parametrize(
    "change",
    [{"balance_quality": 1.5}, {"servers": 0}, {"churn": -1.0}, {"jitter": 1.0}],
)
def test_bad_configurations_are_rejected(change: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        replace(SimulationConfig(), **change).check()  # type: ignore[arg-type]


def test_cli_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["--balance-quality", "2"])
