"""The block server (what `swarm-node` runs)."""

import swarm  # noqa: F401  (first: it sets gRPC's I/O before any node module loads gRPC)
