import pytest

from swarm.latency import RttTracker


def test_ewma_follows_samples() -> None:
    rtt = RttTracker(alpha=0.5)
    assert rtt.observe("a", 0.100, 0.0) == pytest.approx(0.100)
    assert rtt.observe("a", 0.200, 1.0) == pytest.approx(0.150)
    assert rtt.observe("a", 0.200, 2.0) == pytest.approx(0.175)
    assert rtt.get("b") is None and rtt.snapshot() == {"a": pytest.approx(0.175)}


def test_stale_lists_unknown_first_then_old() -> None:
    rtt = RttTracker(max_age_s=10.0)
    rtt.observe("old", 0.01, 0.0)
    rtt.observe("fresh", 0.01, 15.0)
    assert rtt.stale(["old", "fresh", "new"], 20.0) == ["new", "old"]


def test_rejects_bad_samples() -> None:
    with pytest.raises(ValueError):
        RttTracker().observe("a", float("nan"), 0.0)
