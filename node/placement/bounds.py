"""Upper bounds on the swarm throughput any placement of given servers can reach.

For judging placement policies (the simulator, tests): a policy at 95% of a bound is
within 5% of the best possible. Pure arithmetic on (throughput, block count) pairs.
"""

from __future__ import annotations

from collections.abc import Iterable

from node.placement.spans import check_num_blocks


def average_bound(servers: Iterable[tuple[float, int]], num_blocks: int) -> float:
    """sum_i t_i * b_i / num_blocks, for servers of throughput t_i holding b_i blocks.

    Why it bounds: however the servers are placed, the per-block throughputs add up to
    sum_i t_i * b_i (each server adds t_i to each of its b_i blocks), and the slowest
    block is at most the mean. Block counts above num_blocks count as num_blocks.
    """
    check_num_blocks(num_blocks)
    total = sum(max(t, 0.0) * min(b, num_blocks) for t, b in servers)
    return total / num_blocks
