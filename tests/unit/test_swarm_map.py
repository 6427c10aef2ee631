"""Building the swarm map from block entries, and the model shape servers agree on."""

from __future__ import annotations

import json

from swarm.dht.swarm_map import build_swarm_map, announced_model_of
from swarm.identity import Identity
from swarm.records import BlockEntry, BlockRange, ModelEntry, ServerState

A, B, C, D = (f"{c}" * 40 for c in "abcd")


def entry(server_id: str, start: int, end: int, state: ServerState = ServerState.ONLINE,
          speed: float = 10.0, issued_at: float = 1.0) -> BlockEntry:
    return BlockEntry(server_id, f"10.0.0.1:{start + 1000}", BlockRange(start, end), state,
                      inference_tokens_per_s=speed, issued_at=issued_at, expiration=issued_at + 60)


def by_block(num_blocks: int, *entries: BlockEntry) -> dict[int, list[BlockEntry]]:
    return {b: [e for e in entries if b in e.blocks] for b in range(num_blocks)}


def test_coverage_per_block_with_gaps_flagged() -> None:
    entries = [entry(A, 0, 4, speed=5.0), entry(B, 2, 6, speed=20.0), entry(C, 6, 7, ServerState.JOINING)]
    swarm = build_swarm_map("m", 8, 64, by_block(8, *entries))
    assert [len(b.servers) for b in swarm.blocks] == [1, 1, 2, 2, 1, 1, 1, 0]
    assert swarm.blocks[2].servers[0].server_id == B  # faster ONLINE server first
    assert swarm.uncovered_blocks == (6, 7)  # block 6 has only a JOINING server
    assert not swarm.complete
    totals = swarm.totals()
    assert totals.servers == 3 and totals.covered_blocks == 6
    assert totals.by_state[ServerState.JOINING] == 1
    assert totals.min_online_servers_per_block == 0
    assert totals.min_block_inference_tokens_per_s == 0.0


def test_complete_swarm_totals() -> None:
    swarm = build_swarm_map("m", 4, 64, by_block(4, entry(A, 0, 4, speed=5.0), entry(B, 2, 4, speed=20.0)))
    assert swarm.complete and swarm.uncovered_blocks == ()
    assert swarm.totals().min_block_inference_tokens_per_s == 5.0
    assert swarm.totals().min_online_servers_per_block == 1


def test_newest_entry_of_a_server_wins() -> None:
    moved_from = entry(A, 0, 2, issued_at=1.0)
    moved_to = entry(A, 2, 4, issued_at=5.0)
    swarm = build_swarm_map("m", 4, 64, {0: [moved_from], 1: [moved_from], 2: [moved_to], 3: [moved_to]})
    assert swarm.uncovered_blocks == (0, 1)
    assert [s.blocks for s in swarm.servers] == [BlockRange(2, 4)]


def test_unknown_model_is_an_empty_map() -> None:
    swarm = build_swarm_map("m", 0, 0, {})
    assert swarm.num_blocks == 0 and not swarm.complete and swarm.to_json_dict()["blocks"] == []


def test_json_shape() -> None:
    swarm = build_swarm_map("org/m", 3, 64, by_block(3, entry(A, 0, 2), entry(B, 1, 3, ServerState.DRAINING)))
    data = json.loads(json.dumps(swarm.to_json_dict()))
    assert set(data) == {"model", "num_blocks", "hidden_size", "complete", "uncovered_blocks", "totals", "servers", "blocks"}
    assert data["uncovered_blocks"] == [2]
    assert data["totals"] == {
        "servers": 2, "joining": 0, "online": 1, "draining": 1, "offline": 0, "covered_blocks": 2,
        "min_online_servers_per_block": 0, "min_block_inference_tokens_per_s": 0.0,
    }
    assert data["servers"][1] == {
        "server_id": B, "short_id": B[:8], "address": "10.0.0.1:1001", "state": "draining", "blocks": [1, 3],
        "inference_tokens_per_s": 10.0, "forward_tokens_per_s": 0.0, "free_cache_tokens": 0,
    }
    assert data["blocks"][1] == {"block": 1, "online": 1, "servers": [A, B]}


def test_model_info_is_what_the_majority_states() -> None:
    ids = [Identity.generate().server_id for _ in range(4)]
    entries = [ModelEntry(ids[0], "m", 30, 576, issued_at=1.0), ModelEntry(ids[1], "m", 30, 576, issued_at=2.0),
               ModelEntry(ids[2], "m", 999, 576, issued_at=9.0), ModelEntry(ids[3], "other", 5, 8, issued_at=3.0)]
    info = announced_model_of("m", entries)
    assert info is not None and (info.num_blocks, info.hidden_size, info.num_servers) == (30, 576, 3)
    assert announced_model_of("none", entries) is None
