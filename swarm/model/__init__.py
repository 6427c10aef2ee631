"""The model layer both sides share: checkpoint reading, family adapters, the client head.

- `swarm.model.checkpoint`: locating a checkpoint, reading its config and only the
  tensors asked for (safetensors, lazily), dtype resolution.
- `swarm.model.families`: one adapter per architecture family; a server loads and runs a
  range of blocks with it (`load_block_stack`), a client reads a model's shape and head
  tensor names (`model_info`, `Family.head_keys`).
- `swarm.model.head`: the client's local share of a model (embeddings, final norm, LM head).

What this package does not do: talk to the network or hold sessions (node/ and client/).
"""
