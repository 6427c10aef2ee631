"""The delay proxy's timing rules (pure): delay, rate cap, piece size, CLI addresses."""

from __future__ import annotations

import argparse

import pytest

from devtools.netsim.__main__ import parse_host_port
from devtools.netsim.shaping import LinkShaper, TokenBucket


def test_without_rate_cap_each_chunk_is_late_by_the_delay_only() -> None:
    shaper = LinkShaper(0.05)
    arrivals = [0.0, 0.001, 0.002, 0.010, 1.0]
    # Not serialised: the spacing of the arrivals is kept.
    assert [shaper.delivery_time(65536, t) for t in arrivals] == pytest.approx([t + 0.05 for t in arrivals])


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # (nbytes, arrival) -> delivery, with rate 1000 B/s, burst 100 B, delay 10 ms
        ([(100, 0.0)], [0.01]),  # within the burst: no wait
        ([(100, 0.0), (100, 0.0)], [0.01, 0.11]),  # second waits 100 ms for its tokens
        ([(100, 0.0), (100, 0.0), (50, 0.5)], [0.01, 0.11, 0.51]),  # debt repaid by t=0.2
        ([(300, 0.0), (10, 0.0)], [0.21, 0.22]),  # bigger than the burst: goes into debt
        ([(100, 0.0), (100, 0.05)], [0.01, 0.11]),  # half refilled at 50 ms
    ],
)
def test_rate_cap_serialises_transmission(chunks: list[tuple[int, float]], expected: list[float]) -> None:
    shaper = LinkShaper(0.01, 1000.0, burst_bytes=100)
    assert [shaper.delivery_time(n, t) for n, t in chunks] == pytest.approx(expected)


def test_rate_cap_bounds_long_run_throughput() -> None:
    shaper = LinkShaper(0.0, 1e6, burst_bytes=10_000)
    last = max(shaper.delivery_time(1000, 0.0) for _ in range(1000))  # 1 MB offered at once
    assert last == pytest.approx((1_000_000 - 10_000) / 1e6)


def test_bucket_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate=1000.0, burst=100.0)
    assert bucket.reserve(100, 0.0) == 0.0
    assert bucket.reserve(100, 100.0) == 100.0  # a long idle adds no more than `burst`
    assert bucket.reserve(100, 100.0) == pytest.approx(100.1)


def test_pieces_are_small_only_under_a_rate_cap() -> None:
    assert LinkShaper(0.02).max_chunk(65536) == 65536
    assert LinkShaper(0.02, 1e6).max_chunk(65536) == 2000  # 2 ms of transmission
    assert LinkShaper(0.02, 1e3).max_chunk(65536) == 1024
    assert LinkShaper(0.02, 1e12).max_chunk(65536) == 65536


@pytest.mark.parametrize(("delay", "rate"), [(-0.001, None), (0.0, 0.0), (0.0, -5.0)])
def test_invalid_link_parameters_are_rejected(delay: float, rate: float | None) -> None:
    with pytest.raises(ValueError):
        LinkShaper(delay, rate)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:7001", ("127.0.0.1", 7001)), ("[::1]:0", ("::1", 0)), ("node-a:65535", ("node-a", 65535))],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "host:", "host:70000", "host:x1"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_host_port(text)
