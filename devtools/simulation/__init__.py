"""A churning swarm under three placement policies, side by side (`scripts/simulate`).

One trace of joins and leaves (`trace`: lognormal throughputs, 4..blocks/2 blocks per
server, Poisson churn, all from one seed) is replayed under each policy (`replay`):
greedy join + rebalancing, random join, greedy join without rebalancing. Same trace for
all three, so differences are the policies', not luck's. `report` measures each against
the upper bound sum_i t_i * b_i / num_blocks and prints a table or JSON.

What it measures, per policy: the swarm's throughput (its slowest block) over time as a
fraction of the bound; that fraction time-averaged once settled; migrations per
server-hour; the fraction of time some block had no serving server.

Not modelled: networking, latency, request routing, failures mid-request. The clock is
simulated; a run of 200 servers over a few hours takes seconds.
"""

from devtools.simulation.replay import POLICIES, Tally, replay
from devtools.simulation.report import PolicyResult, SimulationResult, format_table, simulate
from devtools.simulation.trace import Event, ServerSpec, SimulationConfig, make_trace

__all__ = [
    "POLICIES",
    "Event",
    "PolicyResult",
    "ServerSpec",
    "SimulationConfig",
    "SimulationResult",
    "Tally",
    "format_table",
    "make_trace",
    "replay",
    "simulate",
]
