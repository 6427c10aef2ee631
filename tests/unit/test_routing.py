"""Hand-made routing cases: each table row is a small swarm whose best route is known.

Costs in comments are for chained routing: half the client RTT in and out, half the
published peer RTT per hop, block count * seconds per token per block for compute.
"""

from __future__ import annotations

import math

import pytest

from client.routing import (
    LatencyView,
    Route,
    RouteCandidate,
    RouteQuery,
    RoutingConfig,
    Segment,
    exhaustive_route,
    find_route,
    step_cost,
)
from swarm.errors import NoRoute
from swarm.records import BlockEntry, BlockRange, ServerRecord, ServerState


def cand(server_id: str, start: int, end: int, spt: float, free: int = 10_000) -> RouteCandidate:
    return RouteCandidate(server_id, BlockRange(start, end), spt, free)


def chain(route: Route) -> list[str]:
    return [str(s) for s in route.segments]


def both(
    cands: list[RouteCandidate],
    latency: LatencyView,
    query: RouteQuery,
    config: RoutingConfig = RoutingConfig(),
) -> Route:
    """find_route's answer, checked against the exhaustive reference."""
    route = find_route(cands, latency, query, config)
    assert route == exhaustive_route(cands, latency, query, config)
    return route


# --- a fast far server against slow near ones -----------------------------------------

NEAR_FAR = [cand("near1", 0, 10, 0.010), cand("near2", 10, 20, 0.010), cand("far", 0, 20, 0.001)]
NEAR_PEERS = {"near1": {"near2": 0.010}}


@pytest.mark.parametrize(
    ("far_rtt", "tokens", "expected", "expected_s"),
    [
        # far: 0.05 + 20 * 0.001 + 0.05 = 0.12 < near: 0.005 + 0.1 + 0.005 + 0.1 + 0.005
        (0.100, 1, ["far[0:20]"], 0.120),
        # far: 0.15 + 0.02 + 0.15 = 0.32 > near: 0.215
        (0.300, 1, ["near1[0:10]", "near2[10:20]"], 0.215),
        # 8 tokens a step: compute dominates, far: 0.3 + 0.16 = 0.46 < near: 0.015 + 1.6
        (0.300, 8, ["far[0:20]"], 0.460),
    ],
)
def test_fast_far_server_against_slow_near_servers(
    far_rtt: float, tokens: int, expected: list[str], expected_s: float
) -> None:
    peers = {**NEAR_PEERS, "far": {"near1": far_rtt, "near2": far_rtt}}
    latency = LatencyView({"near1": 0.01, "near2": 0.01, "far": far_rtt}, peers)
    route = both(NEAR_FAR, latency, RouteQuery(BlockRange(0, 20), tokens_per_step=tokens))
    assert chain(route) == expected
    assert route.expected_step_s == pytest.approx(expected_s)


# --- segments: entering mid-range, leaving early --------------------------------------


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        # fast a holds 0:10; slow b holds 2:20 and is entered at 10, mid-range
        ([("a", 0, 10, 0.001), ("b", 2, 20, 0.010)], ["a[0:10]", "b[10:20]"]),
        # slow a holds 0:15 but leaves early, at 5, where fast b starts
        ([("a", 0, 15, 0.010), ("b", 5, 20, 0.001)], ["a[0:5]", "b[5:20]"]),
        # fast c in the middle: a is left early, b entered mid-range
        (
            [("a", 0, 20, 0.010), ("b", 10, 20, 0.010), ("c", 5, 15, 0.0001)],
            ["a[0:5]", "c[5:15]", "b[15:20]"],
        ),
        # the same without b: a is used twice, around c (a server may reappear)
        (
            [("a", 0, 20, 0.010), ("c", 5, 15, 0.0001)],
            ["a[0:5]", "c[5:15]", "a[15:20]"],
        ),
        # one server holding everything (0.005 + 0.021 + 0.005) beats two slightly
        # faster ones and a hop (0.005 + 0.01 + 0.002 + 0.01 + 0.005)
        ([("a", 0, 20, 0.00105), ("d", 0, 10, 0.001), ("e", 10, 20, 0.001)], ["a[0:20]"]),
    ],
)
def test_segments_enter_mid_range_and_leave_early(
    servers: list[tuple[str, int, int, float]], expected: list[str]
) -> None:
    client_rtt = {s[0]: 0.01 for s in servers} | {"b": 0.005}  # b is the closest
    config = RoutingConfig(unknown_rtt_s=0.004)
    latency = LatencyView(client_rtt, {})
    route = both([cand(*s) for s in servers], latency, RouteQuery(BlockRange(0, 20)), config)
    assert chain(route) == expected


# --- KV-cache penalty -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fast_free", "slow_free", "expected", "penalties"),
    [
        (4096, 4096, "fast[0:8]", 0),  # both have room: the fast one
        (1000, 4096, "slow[0:8]", 0),  # the fast one is short: the slow one
        (1000, 1000, "fast[0:8]", 1),  # both short: still a route, penalty paid once
        (2048, 4096, "fast[0:8]", 0),  # exactly enough is enough
    ],
)
def test_cache_penalty(fast_free: int, slow_free: int, expected: str, penalties: int) -> None:
    cands = [cand("fast", 0, 8, 0.001, fast_free), cand("slow", 0, 8, 0.004, slow_free)]
    latency = LatencyView({"fast": 0.02, "slow": 0.02}, {})
    config = RoutingConfig(cache_penalty_s=10.0)
    route = both(cands, latency, RouteQuery(BlockRange(0, 8), session_tokens=2048), config)
    assert chain(route) == [expected]
    compute = 8 * (0.001 if expected.startswith("fast") else 0.004)
    assert route.expected_step_s == pytest.approx(0.02 + compute + 10.0 * penalties)


# --- banned servers and uncovered blocks ----------------------------------------------

THREE = [cand("a", 0, 10, 0.001), cand("b", 0, 6, 0.002), cand("c", 6, 10, 0.002)]


@pytest.mark.parametrize(
    ("banned", "expected"),
    [
        (frozenset(), ["a[0:10]"]),
        (frozenset({"a"}), ["b[0:6]", "c[6:10]"]),
        (frozenset({"a", "nobody"}), ["b[0:6]", "c[6:10]"]),
    ],
)
def test_banned_servers_are_skipped(banned: frozenset[str], expected: list[str]) -> None:
    latency = LatencyView({"a": 0.01, "b": 0.01, "c": 0.01}, {})
    route = both(THREE, latency, RouteQuery(BlockRange(0, 10), banned=banned))
    assert chain(route) == expected


@pytest.mark.parametrize(
    ("servers", "span", "banned", "missing"),
    [
        ([("a", 0, 4), ("b", 5, 8)], (0, 8), frozenset(), 4),
        ([("a", 1, 8)], (0, 8), frozenset(), 0),
        ([("a", 0, 7)], (0, 8), frozenset(), 7),
        ([("a", 0, 10), ("b", 0, 6), ("c", 6, 10)], (0, 10), frozenset({"a", "c"}), 6),
        ([("a", 0, 4), ("b", 6, 8)], (5, 8), frozenset(), 5),  # a sub-range
        ([], (0, 3), frozenset(), 0),
    ],
)
def test_no_route_names_the_first_uncovered_block(
    servers: list[tuple[str, int, int]],
    span: tuple[int, int],
    banned: frozenset[str],
    missing: int,
) -> None:
    cands = [cand(*s, spt=0.001) for s in servers]
    query = RouteQuery(BlockRange(*span), banned=banned, model="tiny-llama")
    for search in (find_route, exhaustive_route):
        with pytest.raises(NoRoute, match=f"block {missing} of tiny-llama") as caught:
            search(cands, LatencyView(), query, RoutingConfig())
        assert (caught.value.block, caught.value.model) == (missing, "tiny-llama")


# --- replacing a failed server's blocks inside a chain --------------------------------

# x[0:8] -> (failed y[8:16]) -> z[16:24]; r1 is close to the client, r2 to x and z
REPLACEMENTS = [
    cand("x", 0, 8, 0.001),
    cand("z", 16, 24, 0.001),
    cand("r1", 4, 20, 0.001),
    cand("r2", 8, 16, 0.001),
    cand("h1", 8, 12, 0.0001),
    cand("h2", 12, 16, 0.0001),
]
REPLACEMENT_RTT = {
    "x": {"r1": 0.200, "r2": 0.010, "h1": 0.100},
    "z": {"r1": 0.200, "r2": 0.010, "h2": 0.100},
    "h1": {"h2": 0.100},
}


@pytest.mark.parametrize(
    ("after", "before", "banned", "expected", "expected_s"),
    [
        # from x and to z: r2 (0.005 + 0.008 + 0.005) beats r1 (0.1 + 0.008 + 0.1)
        ("x", "z", frozenset(), ["r2[8:16]"], 0.018),
        # from and to the client: r1 (0.001 + 0.008 + 0.001) is the closest
        (None, None, frozenset(), ["r1[8:16]"], 0.010),
        # r2 banned too: two servers share the gap (0.05 + 0.0004 + 0.05 + 0.0004 + 0.05)
        ("x", "z", frozenset({"r2"}), ["h1[8:12]", "h2[12:16]"], 0.1508),
        # replacing from r1 itself: handing states to itself costs nothing
        ("r1", "z", frozenset(), ["r1[8:16]"], 0.108),
    ],
)
def test_sub_range_replacement_with_endpoints(
    after: str | None,
    before: str | None,
    banned: frozenset[str],
    expected: list[str],
    expected_s: float,
) -> None:
    client = {"r1": 0.002, "r2": 0.300, "h1": 0.300, "h2": 0.300}
    latency = LatencyView(client, REPLACEMENT_RTT)
    query = RouteQuery(BlockRange(8, 16), after=after, before=before, banned=banned | {"y"})
    route = both(REPLACEMENTS, latency, query, RoutingConfig(unknown_rtt_s=1.0))
    assert chain(route) == expected
    assert route.span == BlockRange(8, 16)
    assert route.expected_step_s == pytest.approx(expected_s)


# --- chained versus unchained pricing -------------------------------------------------

PAIR = [cand("a", 0, 5, 0.001), cand("b", 5, 10, 0.001), cand("c", 0, 10, 0.003)]
PAIR_LATENCY = LatencyView({"a": 0.040, "b": 0.040, "c": 0.060}, {"a": {"b": 0.002}})


@pytest.mark.parametrize(
    ("chained", "expected", "expected_s"),
    [
        # chained: a, b = 0.02 + 0.005 + 0.001 + 0.005 + 0.02 = 0.051 < c = 0.03 + 0.03 + 0.03
        (True, ["a[0:5]", "b[5:10]"], 0.051),
        # unchained: a, b = 0.04 + 0.005 + 0.04 + 0.005 = 0.09 > c = 0.06 + 0.03
        (False, ["c[0:10]"], 0.090),
    ],
)
def test_chained_and_unchained_costs(chained: bool, expected: list[str], expected_s: float) -> None:
    config = RoutingConfig(chained=chained)
    route = both(PAIR, PAIR_LATENCY, RouteQuery(BlockRange(0, 10)), config)
    assert chain(route) == expected
    assert route.expected_step_s == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("segments", "chained", "expected_s"),
    [
        ([("a", 0, 5), ("b", 5, 10)], False, 0.090),
        ([("c", 0, 10)], True, 0.090),
        # a peer pair nobody measured costs unknown_rtt_s (0.5) / 2
        ([("c", 0, 5), ("b", 5, 10)], True, 0.03 + 0.015 + 0.25 + 0.005 + 0.02),
    ],
)
def test_step_cost_formula(
    segments: list[tuple[str, int, int]], chained: bool, expected_s: float
) -> None:
    segs = [Segment(s, BlockRange(a, b)) for s, a, b in segments]
    config = RoutingConfig(chained=chained, unknown_rtt_s=0.5)
    query = RouteQuery(BlockRange(0, 10))
    assert step_cost(segs, PAIR, PAIR_LATENCY, query, config) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    "segments",
    [
        [("a", 0, 5)],  # stops short
        [("a", 0, 6), ("b", 6, 10)],  # a does not hold block 5
        [("c", 0, 5), ("c", 5, 10)],  # a server after itself
        [("b", 5, 10)],  # does not start at the span's start
        [("zz", 0, 10)],  # unknown server
    ],
)
def test_step_cost_rejects_broken_chains(segments: list[tuple[str, int, int]]) -> None:
    segs = [Segment(s, BlockRange(a, b)) for s, a, b in segments]
    with pytest.raises(ValueError):
        step_cost(segs, PAIR, PAIR_LATENCY, RouteQuery(BlockRange(0, 10)), RoutingConfig())


# --- beam width, ties, description ----------------------------------------------------


def test_narrow_beam_can_miss_what_a_wide_one_finds() -> None:
    # at block 1, a is cheaper so far than b, but a's hop to c is slow
    cands = [cand("a", 0, 1, 0.001), cand("b", 0, 1, 0.002), cand("c", 1, 2, 0.001)]
    latency = LatencyView({"a": 0.01, "b": 0.01, "c": 0.01}, {"a": {"c": 0.2}, "b": {"c": 0.002}})
    query = RouteQuery(BlockRange(0, 2))
    narrow = find_route(cands, latency, query, RoutingConfig(beam_width=1))
    wide = find_route(cands, latency, query, RoutingConfig(beam_width=3))
    assert chain(narrow) == ["a[0:1]", "c[1:2]"]
    assert chain(wide) == ["b[0:1]", "c[1:2]"]
    assert wide == exhaustive_route(cands, latency, query, RoutingConfig())
    assert wide.expected_step_s < narrow.expected_step_s


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        # identical servers: the smaller id
        ([("b", 0, 4, 0.001), ("a", 0, 4, 0.001)], ["a[0:4]"]),
        # one segment or two at equal cost (all hops free): one
        ([("a", 0, 2, 0.001), ("b", 2, 4, 0.001), ("c", 0, 4, 0.001)], ["c[0:4]"]),
    ],
)
def test_ties_are_broken_deterministically(
    servers: list[tuple[str, int, int, float]], expected: list[str]
) -> None:
    cands = [cand(*s) for s in servers]
    config = RoutingConfig(unknown_rtt_s=0.0)
    for ordering in (cands, cands[::-1]):
        route = both(ordering, LatencyView(), RouteQuery(BlockRange(0, 4)), config)
        assert chain(route) == expected


def test_describe() -> None:
    route = Route(
        (Segment("s1", BlockRange(0, 10)), Segment("s2", BlockRange(10, 20))), 0.01234
    )
    assert route.describe() == "s1[0:10] -> s2[10:20] (expected 12.3 ms/step)"
    assert route.server_ids == ("s1", "s2")
    with pytest.raises(ValueError):
        Route((Segment("s1", BlockRange(0, 10)), Segment("s2", BlockRange(11, 20))), 0.0)


def test_duplicate_candidates_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        find_route([cand("a", 0, 2, 0.1)] * 2, LatencyView(), RouteQuery(BlockRange(0, 2)))


# --- inputs built from published records ----------------------------------------------


@pytest.mark.parametrize(
    ("tps", "load", "expected_spt"),
    [(100.0, 1.0, 0.01), (100.0, 3.0, 0.03), (0.0, 1.0, 2.0)],
)
def test_candidate_from_entry(tps: float, load: float, expected_spt: float) -> None:
    entry = BlockEntry(
        "s", "127.0.0.1:1", BlockRange(2, 5), ServerState.ONLINE, tps, 900.0, 512
    )
    c = RouteCandidate.from_entry(entry, load_factor=load, unmeasured_s=2.0)
    assert (c.server_id, c.blocks, c.free_cache_tokens) == ("s", BlockRange(2, 5), 512)
    assert c.seconds_per_token_per_block == pytest.approx(expected_spt)
    assert c.forward_tokens_per_s == 900.0


@pytest.mark.parametrize(
    ("a", "b", "expected_s"),
    [
        ("s1", "s2", 0.010),  # s1 published 20 ms to s2
        ("s2", "s1", 0.015),  # s2 published its own 30 ms
        ("s2", "s3", 0.005),  # s2 did not measure s3; s3 published 10 ms to s2
        ("s1", "s3", 0.25),  # nobody measured: unknown_rtt_s / 2
        ("s3", "s3", 0.0),  # a server to itself
    ],
)
def test_latency_view_from_records(a: str, b: str, expected_s: float) -> None:
    def record(sid: str, hops: dict[str, float]) -> ServerRecord:
        return ServerRecord(
            sid, "addr", "m", BlockRange(0, 1), ServerState.ONLINE, next_hop_rtt_ms=hops
        )

    records = [record("s1", {"s2": 20.0}), record("s2", {"s1": 30.0}), record("s3", {"s2": 10.0})]
    view = LatencyView.from_records(records, {"s1": 0.05})
    assert view.link_s(a, b, unknown_s=0.5) == pytest.approx(expected_s)
    assert view.client_rtt("s1", 0.5) == 0.05 and view.client_rtt("s2", 0.5) == 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: cand("a", 0, 1, -1.0),
        lambda: cand("a", 0, 1, math.nan),
        lambda: cand("", 0, 1, 0.1),
        lambda: RoutingConfig(beam_width=0),
        lambda: RoutingConfig(cache_penalty_s=math.inf),
        lambda: RouteQuery(BlockRange(0, 1), tokens_per_step=0),
    ],
)
def test_invalid_inputs_are_rejected(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]
