"""The pure arithmetic of devtools.bench.stats and the bench dispatcher's table of subcommands."""

from __future__ import annotations

import pytest

from devtools.bench import DEFAULT_SUBCOMMAND, SUBCOMMANDS
from devtools.bench.__main__ import main as bench_main
from devtools.bench.stats import Comparison, format_table, per_token, rotating_order


@pytest.mark.parametrize(("rounds", "names", "expected"), [
    (1, ["a", "b"], [("a", "b")]),
    (4, ["a", "b"], [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")]),
    (3, ["s", "u", "l"], [("s", "u", "l"), ("u", "l", "s"), ("l", "s", "u")]),
])
def test_rotating_order(rounds: int, names: list[str], expected: list[tuple[str, ...]]) -> None:
    assert rotating_order(rounds, names) == expected


def test_every_contender_runs_first_equally_often() -> None:
    order = rotating_order(6, ["a", "b", "c"])
    assert sorted(first for first, *_ in order) == ["a", "a", "b", "b", "c", "c"]
    assert all(sorted(o) == ["a", "b", "c"] for o in order)


@pytest.mark.parametrize(("rounds", "names"), [(0, ["a"]), (-1, ["a"]), (2, [])])
def test_rotating_order_rejects_nonsense(rounds: int, names: list[str]) -> None:
    with pytest.raises(ValueError):
        rotating_order(rounds, names)


def test_comparison_medians_and_ratios() -> None:
    row = Comparison("x", a=(0.012, 0.010, 0.011, 0.100), b=(0.010, 0.010, 0.010, 0.010))
    assert row.median_a == pytest.approx(0.0115)
    assert row.median_b == pytest.approx(0.010)
    assert row.ratio == pytest.approx(1.15)
    # per round: 1.2, 1.0, 1.1, 10.0 -> median 1.15; one bad round does not move it
    assert row.paired_ratio == pytest.approx(1.15)
    assert row.spread("a") == (0.010, 0.100)


def test_paired_ratio_differs_from_ratio_of_medians_when_rounds_drift() -> None:
    # the machine slows down over time; both sides see it in the same round
    row = Comparison("drift", a=(0.011, 0.022, 0.044), b=(0.010, 0.020, 0.040))
    assert row.paired_ratio == pytest.approx(1.1)
    assert row.ratio == pytest.approx(1.1)
    shuffled = Comparison("unpaired", a=(0.044, 0.011, 0.022), b=(0.010, 0.020, 0.040))
    assert shuffled.ratio == pytest.approx(1.1)
    assert shuffled.paired_ratio != pytest.approx(1.1)


@pytest.mark.parametrize(("a", "b"), [((), ()), ((1.0,), (1.0, 2.0)), ((0.0,), (1.0,)), ((1.0,), (-1.0,))])
def test_comparison_rejects_bad_samples(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Comparison("bad", a, b)


def test_per_token() -> None:
    assert per_token([0.01, 0.03], 2) == pytest.approx(0.02)
    with pytest.raises(ValueError):
        per_token([], 0)


def test_table_marks_the_target_row_only() -> None:
    rows = [Comparison("decode", (0.012,), (0.010,)), Comparison("forward", (0.5,), (0.1,))]
    table = format_table(rows, "swarm", "local", target=1.15, target_row="decode").splitlines()
    assert len(table) == 3
    assert "1.20x" in table[1] and "target <= 1.15x: NOT met" in table[1]
    assert "5.00x" in table[2] and "target" not in table[2]
    met = format_table([Comparison("decode", (0.011,), (0.010,))], "s", "l", 1.15, "decode")
    assert "target <= 1.15x: met" in met


def test_dispatcher_lists_local_and_wan_and_refuses_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert DEFAULT_SUBCOMMAND == "local"
    assert {"local", "wan"} <= set(SUBCOMMANDS)
    assert bench_main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert "local" in listing and "wan" in listing
    assert bench_main(["no-such-bench"]) == 2
    assert "unknown or unavailable benchmark 'no-such-bench'" in capsys.readouterr().err
