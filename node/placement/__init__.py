"""Block placement: which contiguous range of blocks each server should serve.

Pure decisions over plain data (no sockets, clocks or randomness; the caller passes the
swarm's records in and adds any jitter):

    choose_blocks(servers, num_blocks, my_num_blocks, my_throughput) -> BlockRange
        where a joining server goes: the range that raises the swarm's throughput most
    should_move(servers, me, num_blocks, balance_quality) -> BlockRange | None
        whether a serving server should move, judged after the others would respond
    num_blocks_auto(memory_bytes_available, bytes_per_block, cache_bytes_reserved,
                    num_blocks) -> int
        how many blocks fit for `--num-blocks auto`
    swarm_throughput / block_throughputs
        the swarm's throughput (its slowest block) and the per-block figures

Throughput of a block = sum of the throughputs of the JOINING and ONLINE servers that
cover it; the swarm's throughput = the minimum over blocks. Modules: `spans` (the data and
the sums), `choose` (the objective), `rebalance` (the decision), `bounds` (upper bounds on
what any placement can reach, for the simulator and tests).
"""

from node.placement.choose import best_start, choose_blocks, num_blocks_auto
from node.placement.rebalance import DEFAULT_BALANCE_QUALITY, should_move
from node.placement.spans import (
    SERVING_STATES,
    ServerSpan,
    UNMEASURED_TOKENS_S,
    block_throughputs,
    credited_throughput,
    placement_throughput,
    span_from_entry,
    span_from_record,
    swarm_throughput,
)

__all__ = [
    "DEFAULT_BALANCE_QUALITY",
    "SERVING_STATES",
    "ServerSpan",
    "best_start",
    "UNMEASURED_TOKENS_S",
    "block_throughputs",
    "credited_throughput",
    "choose_blocks",
    "num_blocks_auto",
    "placement_throughput",
    "should_move",
    "span_from_entry",
    "span_from_record",
    "swarm_throughput",
]
