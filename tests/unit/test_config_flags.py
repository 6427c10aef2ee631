"""Flags made from config dataclasses: names, defaults (once, in the dataclass), parsing, help."""

from __future__ import annotations

import argparse
import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client.cli import COMMANDS as CLIENT_COMMANDS
from client.config import ClientConfig
from node.cli import build_parser as node_parser
from node.config import DhtNodeConfig, ServerConfig
from node.scheduler import Scheduling
from swarm.addresses import PeerAddress
from swarm.cli import build_parser
from swarm.config_flags import add_config_flags, config_from_args, flag, flag_fields
from swarm.records import BlockRange


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Example:
    name: str = field(metadata=flag("required: no default"))
    peers: tuple[PeerAddress, ...] = field(default=(), metadata=flag("peers", metavar="HOST:PORT"))
    count: int = field(default=3, metadata=flag("how many"))
    ratio: float = field(default=0.5, metadata=flag("a share", parse=lambda t: _share(t)))
    color: Color = field(default=Color.RED, metadata=flag("a color"))
    blocks: BlockRange | None = field(default=None, metadata=flag("pinned", group="where"))
    auto: int | None = field(default=None, metadata=flag("or this many", group="where", default_text="auto"))
    path: Path | None = field(default=None, metadata=flag("a file", name="file"))
    quiet: bool = field(default=False, metadata=flag("say less"))
    hidden: int = 7
    """Not a flag: no metadata."""


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(f"share must be in [0, 1), got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="example", exit_on_error=False)
    add_config_flags(p, Example)
    return p


def test_defaults_come_from_the_dataclass() -> None:
    config = config_from_args(Example, parser().parse_args(["--name", "x"]))
    assert config == Example(name="x")


def test_values_are_parsed_by_type() -> None:
    args = parser().parse_args(["--name", "x", "--peers", "a:1", "[::1]:2", "--count", "5", "--ratio", "0.25",
                                "--color", "blue", "--blocks", "2:4", "--file", "k.pem", "--quiet"])
    assert config_from_args(Example, args, count=6) == Example(
        "x", (PeerAddress("a", 1), PeerAddress("::1", 2)), 6, 0.25, Color.BLUE, BlockRange(2, 4), None,
        Path("k.pem"), True)


@pytest.mark.parametrize("argv,message", [
    (["--peers", "nohost"], "expected HOST:PORT"),
    (["--ratio", "1.5"], "share must be in [0, 1)"),
    (["--color", "green"], "'green' is not a valid Color"),
    (["--blocks", "1:2", "--auto", "3"], "not allowed with argument"),
    ([], "the following arguments are required: --name"),
])
def test_bad_values_are_usage_errors_with_their_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = argparse.ArgumentParser(prog="example")
    add_config_flags(p, Example)
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "x", *argv] if argv else argv)
    assert message in capsys.readouterr().err


def test_help_shows_each_default_and_hides_fields_without_a_flag() -> None:
    text = parser().format_help()
    for expected in ("--count COUNT", "(default: 3)", "(default: 0.5)", "(default: red)", "(default: auto)",
                     "--file FILE", "--peers [HOST:PORT ...]", "{red,blue}"):
        assert expected in text
    assert "--hidden" not in text and "(default: None)" not in text and "(default: False)" not in text


def test_only_limits_the_flags() -> None:
    p = argparse.ArgumentParser()
    add_config_flags(p, ClientConfig, only=("initial_peers",))
    assert [a.dest for a in p._actions if a.dest != "help"] == ["initial_peers"]


@pytest.mark.parametrize("cls,argv", [
    (ServerConfig, ["start", "--model", "m"]),
    (DhtNodeConfig, ["dht", "--port", "0"]),
])
def test_swarm_node_flags_default_to_the_config_defaults(cls: type, argv: list[str]) -> None:
    args = node_parser().parse_args(argv)
    for f, _ in flag_fields(cls):
        if f.default is not dataclasses.MISSING and f.name != "port":
            assert getattr(args, f.name) == f.default, f.name


def test_swarm_node_start_keeps_its_flag_names() -> None:
    """The README lists these: a renamed field must not rename a flag silently."""
    text = node_parser()._subparsers._group_actions[0].choices["start"].format_help()  # type: ignore[union-attr]
    for name in ("--initial-peers", "--num-blocks", "--blocks", "--host", "--port", "--dht-port",
                 "--public-address", "--torch-dtype", "--cache-tokens", "--max-alloc-timeout",
                 "--session-idle-timeout", "--update-period", "--drain-grace", "--push-timeout",
                 "--balance-period", "--balance-quality", "--throughput", "--metrics-port", "--identity",
                 "--scheduling", "--batch-share", "--ready-file"):
        assert f"{name} " in text, name
    args = node_parser().parse_args(["start", "--model", "m", "--scheduling", "fifo", "--num-blocks", "auto"])
    assert args.scheduling is Scheduling.FIFO and args.num_blocks is None


def test_client_commands_parse_peers_once() -> None:
    for command in ("generate", "chat", "status"):
        extra = ["--prompt", "hi"] if command == "generate" else []
        args = build_parser("swarm", None, CLIENT_COMMANDS).parse_args(
            [command, "--initial-peers", "h:1", "h:2", *extra])
        assert args.initial_peers == (PeerAddress("h", 1), PeerAddress("h", 2))


@pytest.mark.parametrize("text,address", [
    ("127.0.0.1:31337", PeerAddress("127.0.0.1", 31337)),
    ("bootstrap.example:1", PeerAddress("bootstrap.example", 1)),
    ("[::1]:65535", PeerAddress("::1", 65535)),
])
def test_peer_address_parses_and_prints_back(text: str, address: PeerAddress) -> None:
    assert PeerAddress.parse(text) == address == PeerAddress.of(address) == PeerAddress.of(text)
    assert str(address) == text


@pytest.mark.parametrize("text", ["host", ":80", "host:0", "host:65536", "host:port", "host:-1", ""])
def test_peer_address_refuses_what_is_not_host_port(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        PeerAddress.parse(text)
