"""The ban list: backoff, bans per id AND address (Sybil records), early unban by health check."""

from __future__ import annotations

import pytest

from client.ban_policy import BanList, recheckable
from swarm.errors import PeerBusy, PeerTimedOut, PeerUnavailable, RemoteInvalidInput, SwarmError


def test_backoff_doubles_and_caps() -> None:
    bans = BanList(base_s=1.0, max_s=5.0)
    assert [bans.ban("a", 0.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert bans.is_banned("a", 4.9) and not bans.is_banned("a", 5.0)
    assert bans.banned(1.0) == frozenset({"a"}) and bans.banned(6.0) == frozenset()


def test_success_resets_backoff() -> None:
    bans = BanList(base_s=1.0)
    bans.ban("a", 0.0)
    bans.ban("a", 0.0)
    bans.succeeded("a")
    assert bans.ban("a", 10.0) == 1.0
    assert not bans.is_banned("b", 0.0)


SYBILS = [(f"sybil{i}", "10.0.0.9:7000") for i in range(20)]
GENUINE = [("g1", "10.0.0.1:7000"), ("g2", "10.0.0.2:7000")]


def test_one_failure_of_an_address_bans_every_id_announced_there() -> None:
    bans = BanList(base_s=5.0)
    bans.ban("sybil3", 0.0, "10.0.0.9:7000")
    assert bans.banned(1.0, SYBILS + GENUINE) == frozenset(s for s, _ in SYBILS)
    assert bans.banned(6.0, SYBILS + GENUINE) == frozenset()


def test_an_id_that_moved_to_a_new_address_is_still_banned_by_id() -> None:
    bans = BanList()
    bans.ban("g1", 0.0, "10.0.0.1:7000")
    assert bans.banned(1.0, [("g1", "10.0.0.1:7001")]) == frozenset({"g1"})


@pytest.mark.parametrize(("recheck", "lifted"), [(True, True), (False, False)])
def test_a_health_check_lifts_only_bans_of_dead_looking_servers(recheck: bool, lifted: bool) -> None:
    bans = BanList(base_s=60.0)
    bans.ban("g1", 0.0, "10.0.0.1:7000", recheckable=recheck)
    assert bans.recheckable(1.0, GENUINE) == ({"10.0.0.1:7000"} if recheck else set())
    bans.lift("10.0.0.1:7000", ["g1"])
    assert bans.is_banned("g1", 1.0, "10.0.0.1:7000") is not lifted
    # a relapse after an early unban bans longer: the failure count was kept
    if lifted:
        assert bans.ban("g1", 2.0, "10.0.0.1:7000", recheckable=True) == 120.0


def test_a_silent_failure_makes_a_running_ban_firm() -> None:
    bans = BanList(base_s=60.0)
    bans.ban("g1", 0.0, "10.0.0.1:7000", recheckable=False)
    bans.ban("g1", 1.0, "10.0.0.1:7000", recheckable=True)
    assert bans.recheckable(2.0, GENUINE) == set()


def test_earliest_end_is_when_the_first_holder_becomes_usable() -> None:
    bans = BanList(base_s=5.0)
    bans.ban("g1", 0.0, "10.0.0.1:7000")
    bans.ban("g2", 2.0, "10.0.0.2:7000")
    assert bans.earliest_end(3.0, GENUINE) == 5.0
    assert bans.earliest_end(8.0, GENUINE) is None


@pytest.mark.parametrize(("error", "expected"), [
    (PeerUnavailable("refused", code="UNAVAILABLE"), True),
    (PeerTimedOut("silent", code="UNAVAILABLE"), False),
    (PeerTimedOut("silent", code="DEADLINE_EXCEEDED"), False),
    (PeerBusy("full", code="RESOURCE_EXHAUSTED"), False),
    (RemoteInvalidInput("bad", code="INVALID_ARGUMENT"), False),
    (SwarmError("local"), False),
])
def test_which_failures_a_health_check_may_forgive(error: SwarmError, expected: bool) -> None:
    assert recheckable(error) is expected
