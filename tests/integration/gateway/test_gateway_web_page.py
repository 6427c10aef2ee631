"""The gateway's web page in headless Chromium (Debian chromium + playwright-core, both
installed by the test if missing): it shows every server and block of the 3-server
SmolLM2 swarm, streams a chat answer, and marks a killed server unreachable within one
update period. Screenshots go to the test's temporary directory (path printed).

Runs last among the gateway tests (it kills a server); it starts a replacement before
it returns so that the shared swarm is whole again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.gateway.conftest import SERVER_ARGS, SPANS, UPDATE_PERIOD_S, Served
from tests.integration.gateway.processes import ensure_chromium, npm_install

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

PROMPT = "What is the capital of France?"
SCRIPT = Path(__file__).with_name("page_check.mjs")
FETCH_SLACK_S = 1.5
"""On top of the update period: one /api/v1/swarm round (pings, and now and then the
DHT lookups) and the page's redraw."""


def server_ids(served: Served) -> dict[str, str]:
    with urllib.request.urlopen(f"http://{served.gateway.http}/api/v1/swarm", timeout=60) as response:
        body = json.loads(response.read())
    return {s["address"]: s["server_id"] for s in body["models"][0]["servers"]}


def test_page_shows_the_swarm_chats_and_marks_a_dead_server(served: Served, tmp_path: Path) -> None:
    chromium = ensure_chromium()
    modules = npm_install(("playwright-core@^1.45",))
    script = tmp_path / SCRIPT.name
    script.write_text(SCRIPT.read_text())
    (tmp_path / "node_modules").symlink_to(modules)
    victim = served.swarm.servers[1]
    ids = server_ids(served)
    env = {**os.environ, "GATEWAY_HTTP": served.gateway.http, "CHROMIUM": chromium, "PROMPT": PROMPT,
           "KILL_PID": str(victim.pid), "KILL_ID": ids[victim.address], "SHOTS": str(tmp_path)}
    try:
        done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=900, env=env,
                              check=False)
    finally:
        if not victim.alive:  # give the other tests (and a rerun) their swarm back
            served.swarm.start_server("server-10-20-again", served.model_dir, served.swarm.initial_peers,
                                      "--blocks", str(SPANS[1]), *SERVER_ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    shots = sorted(tmp_path.glob("*.png"))
    print(f"screenshots: {[str(s) for s in shots]}; unreachable after {got['unreachableAfterMs']} ms; "
          f"{got['chatPartials']} partial answers seen")
    keep = os.environ.get("SWARM_TEST_ARTIFACTS")
    if keep:
        for shot in shots:
            shutil.copy(shot, keep)

    rows = {row["id"]: row for row in got["servers"]}
    assert set(rows) == set(ids.values())
    for address, server_id in ids.items():
        assert address in rows[server_id]["text"] and rows[server_id]["reachable"]
    assert sorted(b for row in got["servers"] for b in row["blocks"]) == list(range(30))
    assert [rows[ids[p.address]]["blocks"][0] for p in served.swarm.servers[:3]] == [s.start for s in SPANS]
    assert got["blockColumns"] == 30
    assert "30/30" in got["totals"] and "3/3" in got["totals"]

    assert got["chat"] == "The capital of France is Paris."
    assert got["chatPartials"] >= 3  # seen growing: streamed, not one block at the end

    assert got["updatePeriodS"] == UPDATE_PERIOD_S
    assert got["unreachableAfterMs"] <= (UPDATE_PERIOD_S + FETCH_SLACK_S) * 1000
    assert "UNREACHABLE" in got["killedRow"] and got["reachableRows"] == 2
    assert "2/3" in got["totalsAfter"] and "20/30" in got["totalsAfter"]  # reachable servers, blocks
    assert got["pageErrors"] == []
    assert len(shots) == 2 and all(s.stat().st_size > 10_000 for s in shots)
