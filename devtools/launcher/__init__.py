"""The one launcher of local swarms, for the demo, the benches and the integration tests.

- ready.py: the ready file a `swarm-node` process writes once it serves (`NodeReady`)
- process.py: one child process (`NodeProcess`): spawn, wait for its ready file, stop
- swarm.py: `LocalSwarm`, a DHT bootstrap node and servers in one work directory
- interrupt.py: SIGTERM as Ctrl-C for the tools that hold a swarm
- __main__.py: `python -m devtools.launcher` runs a swarm until Ctrl-C
"""

from devtools.launcher.interrupt import sigterm_as_interrupt
from devtools.launcher.process import (
    PIDS_FILENAME,
    SHARED_CPU_ENV,
    NodeProcess,
    listed_pids,
    read_peak_rss,
    shared_cpu_env,
)
from devtools.launcher.ready import LocalSwarmError, NodeReady, read_ready
from devtools.launcher.swarm import LocalSwarm, LocalSwarmConfig

__all__ = [
    "PIDS_FILENAME", "SHARED_CPU_ENV", "LocalSwarm", "LocalSwarmConfig", "LocalSwarmError", "NodeProcess",
    "NodeReady", "listed_pids", "read_peak_rss", "read_ready", "shared_cpu_env", "sigterm_as_interrupt",
]
