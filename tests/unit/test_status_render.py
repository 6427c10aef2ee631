"""The human view printed by `swarm status`."""

from __future__ import annotations

from client.status_command import render_swarm_map
from swarm.dht.swarm_map import build_swarm_map
from swarm.records import BlockEntry, BlockRange, ServerState

A, B = "a" * 40, "b" * 40


def test_render_groups_blocks_and_flags_gaps() -> None:
    entries = [
        BlockEntry(A, "10.0.0.1:5000", BlockRange(0, 4), ServerState.ONLINE, 12.5, 100.0, 4096, 1.0, 60.0),
        BlockEntry(B, "10.0.0.2:5000", BlockRange(6, 8), ServerState.JOINING, 0.0, 0.0, 0, 1.0, 60.0),
    ]
    swarm = build_swarm_map("org/m", 8, 64, {b: [e for e in entries if b in e.blocks] for b in range(8)})
    text = render_swarm_map(swarm)
    assert "org/m: 8 blocks" in text and "2 servers (1 online)" in text and "INCOMPLETE" in text
    assert "aaaaaaaa  10.0.0.1:5000" in text and "joining" in text
    lines = text.splitlines()
    assert any(line.split()[:2] == ["0-3", "aaaaaaaa"] for line in lines)
    assert any(line.split()[0] == "4-5" and "NO LIVE SERVER" in line for line in lines)
    assert any(line.split()[0] == "6-7" and "bbbbbbbb(joining)" in line for line in lines)
