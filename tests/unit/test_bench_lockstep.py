"""`devtools.bench.workloads.lockstep`: decodings advance one piece each in turn."""

from __future__ import annotations

import pytest

from devtools.bench.workloads import DecodeRun, GreedySteps, lockstep, run_through


def _decoding(name: str, pieces: int, log: list[str], fail_at: int | None = None,
              closed: list[str] | None = None) -> GreedySteps:
    try:
        for piece in range(pieces):
            if piece == fail_at:
                raise RuntimeError(f"{name} failed")
            log.append(f"{name}{piece}")
            yield
    except GeneratorExit:
        if closed is not None:
            closed.append(name)
        raise
    return DecodeRun(tokens=(pieces,), prefill_seconds=1.0, step_seconds=(1.0,) * (pieces - 1))


def test_pieces_alternate_in_the_given_order_until_each_ends() -> None:
    log: list[str] = []
    runs = lockstep({"b": _decoding("b", 3, log), "a": _decoding("a", 2, log)})
    assert log == ["b0", "a0", "b1", "a1", "b2"]
    assert runs == {"a": DecodeRun((2,), 1.0, (1.0,)), "b": DecodeRun((3,), 1.0, (1.0, 1.0))}


def test_run_through_gives_what_lockstep_gives_alone() -> None:
    assert run_through(_decoding("a", 4, [])) == lockstep({"a": _decoding("a", 4, [])})["a"]


def test_an_error_in_one_closes_the_others() -> None:
    log: list[str] = []
    closed: list[str] = []
    with pytest.raises(RuntimeError, match="b failed"):
        lockstep({"a": _decoding("a", 5, log, closed=closed), "b": _decoding("b", 5, log, fail_at=1),
                  "c": _decoding("c", 5, log, closed=closed)})
    assert log == ["a0", "b0", "c0", "a1"]
    assert sorted(closed) == ["a", "c"]  # (their sessions end with them)
