"""The error edge of the commands, the block-range reasons and plain progress lines, as tables.

The same mistakes against real processes: tests/integration/test_cli_errors.py.
"""

from __future__ import annotations

import errno
import logging

import pytest

from client.swarm_lookup import block_spans
from node.start_command import check_blocks
from swarm.cli_edge import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OneLineParser, UsageError, run_at_edge
from swarm.errors import NoRoute, PeerUnavailable, SwarmError, Unauthenticated
from swarm.progress import LogProgress
from swarm.records import BlockRange

EDGE_CASES = [
    # (raised, exit code, the one line after "prog: error: ")
    (SwarmError("the swarm said no"), EXIT_FAILURE, "the swarm said no"),
    (UsageError("--blocks 4:9 ends past the model's 6 blocks"), EXIT_USAGE,
     "--blocks 4:9 ends past the model's 6 blocks"),
    (Unauthenticated("token refused", code="UNAUTHENTICATED"), EXIT_FAILURE,
     "token refused; give the swarm's token (--swarm-token or $SWARM_TOKEN)"),
    (Unauthenticated("token refused; give the swarm's token (--swarm-token or $SWARM_TOKEN)"), EXIT_FAILURE,
     "token refused; give the swarm's token (--swarm-token or $SWARM_TOKEN)"),  # a hint is not repeated
    (NoRoute("no usable server holds block 3 of m"), EXIT_FAILURE,
     "no usable server holds block 3 of m; `swarm status` shows which blocks have no server"),
    (PeerUnavailable("server gone"), EXIT_FAILURE, "server gone; try again; `swarm status` shows the servers"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/key.pem"), EXIT_FAILURE,
     "No such file or directory: /x/key.pem; check the path"),
    (PermissionError(errno.EACCES, "Permission denied", "/etc/id"), EXIT_FAILURE,
     "Permission denied: /etc/id; check the file's permissions, or choose another path"),
    (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), EXIT_FAILURE,
     "Cannot assign requested address"),
    (SwarmError("two\nlines"), EXIT_FAILURE, "two lines"),
]


@pytest.mark.parametrize(("error", "code", "line"), EDGE_CASES, ids=lambda v: type(v).__name__)
def test_an_error_is_one_line_and_its_exit_code(error: BaseException, code: int, line: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def command() -> int:
        raise error

    assert run_at_edge("swarm", command) == code
    assert capsys.readouterr().err == f"swarm: error: {line}\n"


def test_verbose_prints_the_traceback_first(capsys: pytest.CaptureFixture[str]) -> None:
    def command() -> int:
        raise SwarmError("broken")

    assert run_at_edge("swarm", command, verbose=True) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("swarm: error: broken\n")


@pytest.mark.parametrize(("raised", "code"), [(KeyboardInterrupt(), EXIT_INTERRUPTED), (BrokenPipeError(), EXIT_OK)])
def test_ctrl_c_and_a_closed_reader_are_quiet(raised: BaseException, code: int,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def command() -> int:
        raise raised

    assert run_at_edge("swarm", command) == code
    assert capsys.readouterr().err == ""


def test_our_errors_from_a_task_group_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def command() -> int:
        raise ExceptionGroup("tasks", [ExceptionGroup("inner", [UsageError("--port 70000 is no port")])])

    assert run_at_edge("swarm-node", command) == EXIT_USAGE
    assert capsys.readouterr().err == "swarm-node: error: --port 70000 is no port\n"

    def mixed() -> int:
        raise ExceptionGroup("tasks", [SwarmError("ours"), TypeError("a bug")])

    with pytest.raises(ExceptionGroup):  # a bug among them: the traceback stays
        run_at_edge("swarm-node", mixed)


def test_a_bug_keeps_its_traceback() -> None:
    def command() -> int:
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        run_at_edge("swarm", command)


def test_a_usage_error_is_one_line_that_points_at_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = OneLineParser(prog="swarm-node")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start")  # of the parent's class: one line too
    start.add_argument("--cache-tokens", type=int)
    with pytest.raises(SystemExit) as ended:
        parser.parse_args(["start", "--cache-tokens", "many"])
    assert ended.value.code == EXIT_USAGE
    assert capsys.readouterr().err == ("swarm-node start: error: argument --cache-tokens: invalid int value: "
                                       "'many' (see swarm-node start --help)\n")


@pytest.mark.parametrize(("text", "reason"), [
    ("10:5", "10:5 holds no blocks: START:END means blocks START..END-1, so END must be greater than START "
             "(did you mean 5:10?)"),
    ("5:5", "did you mean 5:6?"),
    ("-1:3", "-1:3 starts before block 0"),
    ("five", "expected a block range START:END of block numbers (e.g. 0:10), got 'five'"),
    ("1:2:3", "expected a block range START:END"),
])
def test_a_wrong_block_range_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        BlockRange.parse(text)
    assert reason in str(raised.value)


@pytest.mark.parametrize(("blocks", "count", "message"), [
    (BlockRange(4, 9), None, "--blocks 4:9 ends past the model's 6 blocks; give a range within 0:6"),
    (None, 99, "--num-blocks 99 is more than the model's 6 blocks; give at most 6, or auto"),
    (BlockRange(0, 6), None, None),
    (None, 6, None),
    (None, None, None),
])
def test_blocks_are_checked_against_the_model(blocks: BlockRange | None, count: int | None,
                                              message: str | None) -> None:
    if message is None:
        check_blocks(blocks, count, 6)
        return
    with pytest.raises(UsageError) as raised:
        check_blocks(blocks, count, 6)
    assert str(raised.value) == message


@pytest.mark.parametrize(("blocks", "text"), [([4, 5], "4:6"), ([9, 4, 5], "4:6, 9:10"), ([0], "0:1"), ([], "")])
def test_block_spans_read_as_flags(blocks: list[int], text: str) -> None:
    assert block_spans(blocks) == text


def test_progress_in_a_log_is_a_line_now_and_then(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    caplog.set_level(logging.INFO, logger="swarm.progress")
    with LogProgress(desc="loading blocks 0:30", total=30, unit="block", clock=lambda: now[0],
                     interval=10.0) as shown:
        for _ in range(30):
            now[0] += 1.0  # a block a second: a line every 10 s, and one at the end
            shown.update()
    assert [r.getMessage() for r in caplog.records] == [
        "loading blocks 0:30: 10/30 block (33%)",
        "loading blocks 0:30: 20/30 block (67%)",
        "loading blocks 0:30: 30/30 block (100%) in 30.0 s",
    ]


def test_progress_counts_bytes_and_iterates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="swarm.progress")
    assert list(LogProgress(range(3), desc="steps", clock=lambda: 0.0)) == [0, 1, 2]
    with LogProgress(desc="verifying", total=98e6, unit="B", unit_scale=True, clock=lambda: 0.0) as shown:
        shown.set_postfix_str("sha256")
        shown.update(49e6)
    silent = LogProgress(desc="quiet", total=1, enabled=False, clock=lambda: 0.0)
    silent.update()
    silent.close()
    assert [r.getMessage() for r in caplog.records] == [
        "steps: 3/3 it (100%) in 0.0 s",
        "verifying: 49.0M/98.0M B (50%) [sha256] in 0.0 s",
    ]


def test_argparse_errors_of_the_commands_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import build_parser

    with pytest.raises(SystemExit) as ended:
        build_parser().parse_args(["start", "--model", "m", "--blocks", "10:5"])
    assert ended.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == ("swarm-node start: error: argument --blocks: 10:5 holds no blocks: START:END means blocks "
                   "START..END-1, so END must be greater than START (did you mean 5:10?) "
                   "(see swarm-node start --help)\n")
