"""How a long step is cut into chunks: a long prompt is prefilled a piece at a time.

A session step carries hidden states [batch, tokens, hidden]; an 8k-token prompt of a
wide model would be one message of hundreds of MB (a server refuses tensors over its
limit, 256 MiB by default, and gRPC's cap is 512 MiB), and one compute task that keeps
every other session's decoding step waiting, with attention scores of tokens x context
per head. Sent as consecutive steps of at most `chunk_tokens` tokens, each appending to
the server's KV cache, it gives the same result in bounded messages and tasks.

Pure: no I/O. Used by `client.inference_session` (steps) and `client.failover` (replays).
"""

from __future__ import annotations

import torch

PREFILL_CHUNK_TOKENS = 512
"""Most tokens per step: a server runs a step as one task (on 2 CPU cores a block over 8k
tokens took 1.3 s, a decoding step of another session waits for it), and the attention
scores of a chunk over an 8k context are chunk x 8k floats per head. Servers chunk their
Forward calls the same way (node.backend.FORWARD_CHUNK_TOKENS)."""

STEP_PAYLOAD_BYTES = 16 << 20
"""Most bytes of hidden states per step message: far under the servers' tensor limit and
the message cap, so that wide models and big batches are chunked by size too."""


def chunk_tokens(batch: int, hidden_size: int, dtype: torch.dtype) -> int:
    """Tokens per chunk for rows of `batch` x `hidden_size` values of `dtype` (at least 1)."""
    row_bytes = max(1, batch * hidden_size * dtype.itemsize)
    return max(1, min(PREFILL_CHUNK_TOKENS, STEP_PAYLOAD_BYTES // row_bytes))


def chunk_spans(tokens: int, per_chunk: int) -> list[tuple[int, int]]:
    """[a, b) spans covering range(tokens) in order, each at most `per_chunk` long."""
    if tokens < 0 or per_chunk < 1:
        raise ValueError(f"cannot chunk {tokens} tokens by {per_chunk}")
    return [(a, min(a + per_chunk, tokens)) for a in range(0, tokens, per_chunk)]
