"""Every common mistake with `swarm-node` and `swarm` is one line on stderr, fast (issue 15).

Each row of `MISTAKES` runs the real command in a fresh process and asserts: the exit
code (2 usage, 1 runtime), exactly one line on stderr with no traceback, the words that
tell the user what to do, and the time to fail: under 5 s, or the network wait the row
states, on top of the interpreter's own start-up beyond a second (measured with --help:
this shared 2-core machine sometimes takes 2-3 s just to start Python).

Rows that need a swarm run against real `swarm-node` processes (devtools.launcher): a
DHT node, a server of all 6 blocks of a tiny Llama ("tiny-llama", with a word-level
tokenizer so that the client can generate) and a server of blocks 0:4 only of a copy
named "tiny-half". The same swarm checks the good path: `swarm generate` prints the
answer and nothing on stderr, servers' logs hold plain progress lines, no `\\r`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.launcher import LocalSwarm, LocalSwarmConfig, NodeProcess
from tests.integration.slicing_models import VOCAB, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = {"swarm-node": [sys.executable, "-m", "node.cli"], "swarm": [sys.executable, "-m", "client.cli"]}
CLOSED_HUB = "http://127.0.0.1:9"
"""A hub endpoint nothing listens on (the discard port): 'unreachable' without a network."""


@dataclass(frozen=True)
class Mistake:
    """One wrong command line and what the user must be told."""

    name: str
    argv: tuple[str, ...]
    """program, then arguments; the {names} of `Places` are filled in."""
    code: int
    says: tuple[str, ...]
    """Words the one line must hold (what was wrong, what to do)."""
    seconds: float = 5.0
    """Most time to fail, network waits included."""
    swarm: bool = False
    """Needs the running swarm (slow: servers take seconds to start)."""


MISTAKES = (
    # swarm-node start: flags against the model, before loading anything
    Mistake("blocks past the model", ("swarm-node", "start", "--model", "{model}", "--blocks", "4:9"), 2,
            ("--blocks 4:9 ends past the model's 6 blocks", "give a range within 0:6")),
    Mistake("blocks reversed", ("swarm-node", "start", "--model", "{model}", "--blocks", "10:5"), 2,
            ("10:5 holds no blocks", "did you mean 5:10?", "--help")),
    Mistake("blocks not a range", ("swarm-node", "start", "--model", "{model}", "--blocks", "five"), 2,
            ("expected a block range START:END", "e.g. 0:10")),
    Mistake("num-blocks past the model", ("swarm-node", "start", "--model", "{model}", "--num-blocks", "99"), 2,
            ("--num-blocks 99 is more than the model's 6 blocks", "give at most 6")),
    Mistake("server model missing", ("swarm-node", "start", "--model", "/nonexistent/model"), 1,
            ("/nonexistent/model does not exist", "pass a checkpoint directory")),
    Mistake("server model is a file", ("swarm-node", "start", "--model", "{file}"), 1,
            ("is a file, not a checkpoint directory", "pass a checkpoint directory")),
    Mistake("server model without config", ("swarm-node", "start", "--model", "{plain_dir}"), 1,
            ("has no config.json", "pass a checkpoint directory")),
    Mistake("server checkpoint truncated", ("swarm-node", "start", "--model", "{truncated}"), 1,
            ("model.safetensors is truncated", "download or save the checkpoint again")),
    Mistake("server checkpoint without weights", ("swarm-node", "start", "--model", "{no_weights}"), 1,
            ("has no model.safetensors", "save it with save_pretrained")),
    Mistake("server hub id, no hub", ("swarm-node", "start", "--model", "org/not-here"), 1,
            ("cannot be reached", "pass a checkpoint directory")),
    Mistake("server without --model", ("swarm-node", "start", "--blocks", "0:2"), 2,
            ("--model", "--help")),
    Mistake("malformed peer", ("swarm-node", "start", "--model", "{model}", "--initial-peers", "nohost"), 2,
            ("--initial-peers", "--help")),
    Mistake("DHT port in use, start", ("swarm-node", "start", "--model", "{model}", "--dht-port", "{taken}"), 1,
            ("is in use", "choose another --dht-port")),
    Mistake("DHT port in use, dht", ("swarm-node", "dht", "--host", "127.0.0.1", "--port", "{taken}"), 1,
            ("is in use", "choose another --port")),
    # the user's commands, before loading torch
    Mistake("client model missing", ("swarm", "generate", "--initial-peers", "{dead}", "--model",
                                     "/nonexistent/model", "--prompt", "hi"), 1,
            ("/nonexistent/model does not exist", "pass a checkpoint directory")),
    Mistake("client hub id, no hub", ("swarm", "generate", "--initial-peers", "{dead}", "--model",
                                      "org/not-here", "--prompt", "hi"), 1,
            ("cannot be reached", "pass a checkpoint directory")),
    Mistake("client without --prompt", ("swarm", "generate", "--initial-peers", "{dead}"), 2,
            ("--prompt", "--help")),
    Mistake("negative temperature", ("swarm", "generate", "--initial-peers", "{dead}", "--prompt", "hi",
                                     "--temperature", "-1"), 2,
            ("argument --temperature: must be at least 0, got -1", "--help")),
    Mistake("chat replies longer than the chat", ("swarm", "chat", "--initial-peers", "{dead}", "--model",
                                                  "{model}", "--max-new-tokens", "300", "--max-length", "256"), 2,
            ("--max-new-tokens 300 leaves no room", "give a larger --max-length")),
    # a silent DHT address: one DHT request timeout (1 s) is the stated network wait
    Mistake("wrong peers, generate", ("swarm", "generate", "--initial-peers", "{dead}", "--model", "{model}",
                                      "--prompt", "hi"), 1,
            ("no DHT node answered at", "check --initial-peers"), seconds=6.0),
    Mistake("wrong peers, chat", ("swarm", "chat", "--initial-peers", "{dead}", "--model", "{model}"), 1,
            ("no DHT node answered at", "check --initial-peers"), seconds=6.0),
    Mistake("wrong peers, status", ("swarm", "status", "--initial-peers", "{dead}"), 1,
            ("no DHT node answered at", "check --initial-peers"), seconds=6.0),
    # against the running swarm
    Mistake("unknown model name", ("swarm", "generate", "--initial-peers", "{peers}", "--model", "{model}",
                                   "--model-name", "org/unknown", "--prompt", "hi"), 1,
            ("'org/unknown' is not served on this swarm", "it serves: tiny-half (6 blocks, 1 server), "
             "tiny-llama (6 blocks, 1 server)", "pass --model-name with one of these"), swarm=True),
    Mistake("blocks without a server", ("swarm", "generate", "--initial-peers", "{peers}", "--model", "{half}",
                                        "--prompt", "hi"), 1,
            ("no live server holds blocks 4:6 of tiny-half (live servers hold 0:4 of its 6 blocks)",
             "start a server for them", "the swarm also serves: tiny-llama (6 blocks, 1 server)"), swarm=True),
    Mistake("blocks without a server, chat", ("swarm", "chat", "--initial-peers", "{peers}", "--model",
                                              "{half}"), 1,
            ("no live server holds blocks 4:6 of tiny-half", "start a server for them"), swarm=True),
    Mistake("a checkpoint of another size", ("swarm", "generate", "--initial-peers", "{peers}", "--model",
                                             "{four}", "--model-name", "tiny-llama", "--prompt", "hi"), 1,
            ("the swarm's tiny-llama has 6 blocks, the checkpoint given with --model has 4",
             "pass --model the checkpoint its servers serve"), swarm=True),
    Mistake("status of an unknown model", ("swarm", "status", "--initial-peers", "{peers}", "--model", "nope"), 1,
            ("'nope' is not announced on the swarm", "it serves: tiny-half", "pass --model with one of these"),
            swarm=True),
)


@dataclass
class Places:
    """What the rows' placeholders stand for."""

    model: Path
    half: Path
    file: Path
    plain_dir: Path
    truncated: Path
    no_weights: Path
    four: Path
    dead: str
    taken: int
    peers: str = ""

    def fill(self, argv: tuple[str, ...]) -> list[str]:
        values = {k: str(v) for k, v in vars(self).items()}
        return [arg.format(**values) for arg in argv]


def save_tokenizer(directory: Path) -> None:
    """A word-level tokenizer over the tiny model's vocabulary ("w0" ... "w127")."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", eos_token="w1").save_pretrained(directory)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Places]:
    root = tmp_path_factory.mktemp("cli-errors")
    model = save_checkpoint("llama", root / "tiny-llama", layers=6)
    save_tokenizer(model)
    half = Path(shutil.copytree(model, root / "tiny-half"))
    (root / "weights.bin").write_bytes(b"not a checkpoint")
    (root / "plain").mkdir()
    truncated, no_weights = root / "truncated", root / "no-weights"
    for directory in (truncated, no_weights):
        directory.mkdir()
        shutil.copy(model / "config.json", directory)
    weights = (model / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # an interrupted download
    four = save_checkpoint("llama", root / "tiny-four", layers=4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        silent.bind(("127.0.0.1", 0))  # bound, never answers: a DHT address nobody serves
        taken.bind(("127.0.0.1", 0))  # a DHT port in use
        yield Places(model, half, root / "weights.bin", root / "plain", truncated, no_weights, four,
                     f"127.0.0.1:{silent.getsockname()[1]}", taken.getsockname()[1])


@pytest.fixture(scope="module")
def swarm(places: Places, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeProcess]]:
    """A DHT node, a server of all of tiny-llama and one of blocks 0:4 of tiny-half."""
    local = LocalSwarm(LocalSwarmConfig.for_tests(tmp_path_factory.mktemp("cli-errors-swarm")))
    try:
        dht = local.start_dht()
        servers = {name: local.spawn_server(name, model, [dht.address], "--blocks", blocks, "--throughput", "100")
                   for name, model, blocks in (("full", places.model, "0:6"), ("half", places.half, "0:4"))}
        for server in servers.values():
            local.wait_serving(server)
        places.peers = dht.address
        yield servers
    finally:
        local.stop_all()


def run(argv: list[str], *, stdin: str = "") -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds) of one command, as a user's shell would run it."""
    env = {k: v for k, v in os.environ.items() if k not in ("SWARM_LOG_LEVEL", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=CLOSED_HUB, OMP_NUM_THREADS="1")
    began = time.monotonic()
    done = subprocess.run([*PROGRAMS[argv[0]], *argv[1:]], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - began


@pytest.fixture(scope="module")
def startup() -> dict[str, float]:
    """Seconds each program takes to print its --help: the interpreter and the CLI's imports."""
    return {program: min(run([program, "--help"])[3] for _ in range(2)) for program in PROGRAMS}


def check(mistake: Mistake, places: Places, startup: dict[str, float]) -> None:
    code, out, err, seconds = run(places.fill(mistake.argv))
    assert code == mistake.code, (code, err)
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line on stderr:\n{err}"
    assert "Traceback" not in err
    assert err.startswith(f"{mistake.argv[0]}")
    for words in mistake.says:
        assert words in err, (words, err)
    allowed = mistake.seconds + max(0.0, startup[mistake.argv[0]] - 1.0)
    assert seconds < allowed, (seconds, allowed, err)


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if not m.swarm], ids=lambda m: m.name)
def test_a_mistake_is_one_line(mistake: Mistake, places: Places, startup: dict[str, float]) -> None:
    check(mistake, places, startup)


@pytest.mark.slow
@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.swarm], ids=lambda m: m.name)
def test_a_mistake_against_a_swarm_is_one_line(mistake: Mistake, places: Places, startup: dict[str, float],
                                               swarm: dict[str, NodeProcess]) -> None:
    check(mistake, places, startup)


def test_verbose_shows_the_traceback_then_the_line(places: Places) -> None:
    code, _, err, _ = run(["swarm-node", "-v", "start", "--model", "/nonexistent/model"])
    assert code == 1
    assert err.startswith("Traceback") and "ModelUnavailable" in err
    assert err.splitlines()[-1].startswith("swarm-node: error: checkpoint directory /nonexistent/model")


@pytest.mark.slow
def test_a_reader_that_leaves_ends_status_quietly(places: Places, swarm: dict[str, NodeProcess]) -> None:
    # `swarm status --json | head -0`: the pipe's reader is gone before anything is written
    for extra in ((), ("--json",)):
        reader, writer = os.pipe()
        os.close(reader)
        env = {k: v for k, v in os.environ.items() if k != "SWARM_LOG_LEVEL"}
        done = subprocess.run([*PROGRAMS["swarm"], "status", "--initial-peers", places.peers, *extra],
                              stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT, env=env)
        os.close(writer)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr


@pytest.mark.slow
def test_generate_prints_the_answer_and_nothing_else(places: Places, swarm: dict[str, NodeProcess]) -> None:
    code, out, err, _ = run(["swarm", "generate", "--initial-peers", places.peers, "--model", str(places.model),
                             "--prompt", "w5 w6 w7", "--max-new-tokens", "4"])
    assert (code, err) == (0, ""), err  # no INFO lines, no warnings
    answer, route, speed, drafts = [line for line in out.splitlines() if line]
    assert re.fullmatch(r"(w\d+ ?){4}", answer.strip()), out
    assert route.startswith("[route: ") and "[0:6]" in route
    assert re.fullmatch(r"\[4 tokens in [\d.]+ s: [\d.]+ tokens/s\]", speed)
    # greedy: speculative decoding by default (auto), its acceptance after the speed
    assert re.fullmatch(r"\[speculative: 4 tokens in \d+ steps, \d+ of \d+ drafted tokens accepted \(\d+%\)\]",
                        drafts), drafts


@pytest.mark.slow
def test_servers_log_progress_as_plain_lines(swarm: dict[str, NodeProcess]) -> None:
    log = swarm["full"].text()
    assert "\r" not in log  # no bar redrawn into a file
    assert re.search(r"INFO swarm\.progress: loading blocks 0:6: 6/6 block \(100%\) in [\d.]+ s", log), log
