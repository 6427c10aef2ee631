"""swarm-llm's thin client: the public face. Import what you use from here.

    from client import AutoDistributedModelForCausalLM
    model = AutoDistributedModelForCausalLM.from_pretrained(path, initial_peers=["host:port"])
    ids = model.generate(input_ids, max_new_tokens=20)

- `AutoDistributedModelForCausalLM.from_pretrained(...)` -> `DistributedModelForCausalLM`:
  local embeddings and LM head, the swarm's blocks as `model.layers` (a `RemoteSequential`),
  HF-style `generate`, `inference_session(...)` returning an `InferenceSession`.
- `ClientConfig` (and `RoutingConfig` inside it): timeouts, retries, bans, routing.
- The errors a client raises, all `SwarmError`s (the tree is drawn in `swarm.errors`):
  `NoRoute` (no live server holds a needed block), `PeerUnavailable` and its kinds
  `PeerRefused`/`PeerBusy`/`PeerTimedOut` (a server failed and failover ran out),
  `RemoteInvalidInput` (a server rejected the request itself: never retried),
  `RemoteError` (their base: any status, with `.peer` and `.code`), `InvalidInput` (bad
  arguments, found before anything was sent), `Unauthenticated` (a private swarm refused
  the token), `BadOutput` (NaN/Inf or an outvoted answer, failed over like a dead server).

Names resolve lazily (PEP 562), so `import client.routing` and other pure submodules do
not pay for torch and gRPC. What this package does not export: transports, sessions'
internals and the routing algorithms (import those from their modules when you need them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import swarm  # noqa: F401  (first: it sets gRPC's I/O before any client module loads gRPC)

if TYPE_CHECKING:
    from client.config import ClientConfig
    from client.verification import BadOutput
    from client.model import AutoDistributedModelForCausalLM, DistributedModelForCausalLM
    from client.remote_sequential import RemoteSequential
    from client.routing import RoutingConfig
    from client.session_handle import InferenceSession
    from swarm.errors import (
        InvalidInput,
        NoRoute,
        PeerBusy,
        PeerRefused,
        PeerTimedOut,
        PeerUnavailable,
        RemoteError,
        RemoteInvalidInput,
        SwarmError,
        Unauthenticated,
    )

_EXPORTS = {
    "AutoDistributedModelForCausalLM": "client.model",
    "DistributedModelForCausalLM": "client.model",
    "ClientConfig": "client.config",
    "RoutingConfig": "client.routing",
    "InferenceSession": "client.session_handle",
    "RemoteSequential": "client.remote_sequential",
    "SwarmError": "swarm.errors",
    "InvalidInput": "swarm.errors",
    "NoRoute": "swarm.errors",
    "PeerUnavailable": "swarm.errors",
    "PeerRefused": "swarm.errors",
    "PeerBusy": "swarm.errors",
    "PeerTimedOut": "swarm.errors",
    "RemoteError": "swarm.errors",
    "RemoteInvalidInput": "swarm.errors",
    "Unauthenticated": "swarm.errors",
    "BadOutput": "client.verification",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once; later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
