from client.ban_policy import BanList


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
