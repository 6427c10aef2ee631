"""The WAN bench's pure parts: floors, step timing, block splits, the table and JSON."""

from __future__ import annotations

import json

import pytest

from devtools.bench.wan import (
    ModeResult,
    WanBenchConfig,
    WanResult,
    build_parser,
    decode_step_latencies,
    floor_s,
    format_table,
    mode_result,
    one_way_trips,
    split_blocks,
    to_json,
    tokens_wanted,
)
from swarm.records import BlockRange


@pytest.mark.parametrize(("chained", "servers", "trips"), [
    (True, 1, 2), (True, 3, 4), (True, 5, 6), (False, 1, 2), (False, 3, 6), (False, 5, 10),
])
def test_one_way_trips(chained: bool, servers: int, trips: int) -> None:
    assert one_way_trips(chained, servers) == trips


def test_floor_is_trips_times_delay_plus_compute() -> None:
    assert floor_s(True, 3, 0.020, 0.005) == pytest.approx(0.085)
    assert floor_s(False, 3, 0.020, 0.004) == pytest.approx(0.124)
    assert floor_s(True, 3, 0.0, 0.007) == pytest.approx(0.007)


def test_decode_steps_leave_out_the_prompt_and_the_prefill() -> None:
    # puts: prompt at 0, first token after the prefill at 5, then one per decoding step
    assert decode_step_latencies([0.0, 5.0, 5.1, 5.3, 5.6]) == pytest.approx([0.1, 0.2, 0.3])
    assert decode_step_latencies([0.0, 5.0]) == []


def test_mode_result_takes_medians_and_prices_the_floor() -> None:
    result = mode_result("chained", 3, 0.020, delayed=[0.09, 0.5, 0.1], zero_delay=[0.01, 0.002, 0.005])
    assert result == ModeResult("chained", 0.1, 0.005, pytest.approx(0.085), 3)
    assert result.ratio == pytest.approx(0.1 / 0.085)
    unchained = mode_result("unchained", 3, 0.020, [0.13], [0.01])
    assert unchained.floor_s == pytest.approx(0.13) and unchained.ratio == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no decoding steps"):
        mode_result("chained", 3, 0.02, [], [0.01])


@pytest.mark.parametrize(("blocks", "parts", "spans"), [
    (6, 3, ["0:2", "2:4", "4:6"]),
    (30, 3, ["0:10", "10:20", "20:30"]),
    (7, 3, ["0:2", "2:5", "5:7"]),
    (3, 3, ["0:1", "1:2", "2:3"]),
    (5, 1, ["0:5"]),
])
def test_split_blocks_covers_everything_contiguously(blocks: int, parts: int, spans: list[str]) -> None:
    assert split_blocks(blocks, parts) == tuple(BlockRange.parse(s) for s in spans)


def test_split_blocks_rejects_more_servers_than_blocks() -> None:
    with pytest.raises(ValueError):
        split_blocks(2, 3)


def _result(chained_s: float) -> WanResult:
    return WanResult(3, 0.020, 20, 3, "wan-tiny-llama", (
        ModeResult("chained", chained_s, 0.005, 0.085, 57),
        ModeResult("unchained", 0.130, 0.006, 0.126, 57),
    ))


def test_table_lists_each_mode_with_floor_and_ratio() -> None:
    lines = format_table(_result(0.090)).splitlines()
    assert "20.0 ms" in lines[0] and "3 servers" in lines[0]
    assert lines[1].split()[:4] == ["mode", "per-token", "ms", "floor"]
    chained, unchained = lines[2].split(), lines[3].split()
    assert chained[:4] == ["chained", "90.0", "85.0", "1.06"] and chained[-1] == "4"
    assert unchained[:4] == ["unchained", "130.0", "126.0", "1.03"] and unchained[-1] == "6"
    assert lines[4].endswith(": met")


def test_table_says_when_chained_misses_the_target() -> None:
    assert format_table(_result(0.100)).splitlines()[-1].endswith("NOT met")  # 1.18 x floor


def test_json_carries_the_ratios() -> None:
    data = json.loads(json.dumps(to_json(_result(0.090))))
    assert data["delay_s"] == 0.020 and data["servers"] == 3
    assert [m["mode"] for m in data["modes"]] == ["chained", "unchained"]
    assert data["modes"][0]["ratio"] == pytest.approx(0.090 / 0.085)


def test_config_and_parser_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.delay_ms, tokens_wanted(args), args.rounds, args.servers, args.model, args.json) == (
        20.0, 20, 3, 3, None, False)
    assert tokens_wanted(build_parser().parse_args(["--speculative"])) == 96
    assert tokens_wanted(build_parser().parse_args(["--speculative", "4", "--tokens", "30"])) == 30
    with pytest.raises(ValueError):
        WanBenchConfig(tokens=1)
    with pytest.raises(ValueError):
        WanBenchConfig(delay_s=-0.001)
