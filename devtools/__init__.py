"""Development tools of swarm-llm: run from a checkout, not installed with the product.

- launcher/: the one local-swarm launcher (demo, benches, integration tests)
- demo.py: what `scripts/demo` runs
- bench/: what `scripts/bench` runs (one module per subcommand)
- netsim/: a user-space delay proxy standing in for a wide-area link
- simulation/: the placement simulator behind `scripts/simulate`

The wheel does not ship this package (pyproject.toml packages only swarm, node and
client); scripts run from the repository root with `python -m devtools...`, and pytest
finds it there too. It may import swarm, node and client; they never import it.
"""

import swarm  # noqa: F401  (first: gRPC floor workers and launchers load gRPC as the swarm does)
