"""How a long step is cut into chunks: a long prompt is prefilled a piece at a time.

A session step carries hidden states [batch, tokens, hidden]; an 8k-token prompt of a
wide model would be one message of hundreds of MB (a server refuses tensors over its
limit, 256 MiB by default, and gRPC's cap is 512 MiB), and one compute task that keeps
every other session's decoding step waiting, with attention scores of tokens x context
per head. Sent as consecutive steps, each appending to the server's KV cache, it gives
the same result in bounded messages, tasks and attention working sets: a chunk has at most
`chunk_tokens` tokens, and fewer late in a long context, where each of its queries meets
more keys (`prefill_spans`).

Pure: no I/O. Used by `client.inference_session` (steps) and `client.failover` (replays),
and by `node.backend`, which cuts a long step the same way whoever sent it (a client that
does not chunk must not make a server hold an 8k x 8k attention working set).
"""

from __future__ import annotations

import torch

PREFILL_CHUNK_TOKENS = 512
"""Most tokens per step: a server runs a step as one task (on 2 CPU cores a block over 8k
tokens took 1.3 s, a decoding step of another session waits for it), and the attention
scores of a chunk over an 8k context are chunk x 8k floats per head. Servers chunk their
Forward calls the same way (node.backend.FORWARD_CHUNK_TOKENS), and long steps by `prefill_spans`."""

STEP_PAYLOAD_BYTES = 16 << 20
"""Most bytes of hidden states per step message: far under the servers' tensor limit and
the message cap, so that wide models and big batches are chunked by size too."""

PREFILL_ATTENTION_AREA = 1 << 20
"""Most query x key pairs of one chunk, all rows together: a server's attention kernel may
hold a few float tensors of this many elements per head (scores, softmax, the mask), so at
SmolLM2's 9 heads, 1M pairs are ~36 MiB each. At an 8k context a chunk is 128 tokens.
Measured on 10 SmolLM2 blocks (weights paged in): an 8160-token prompt in these chunks
raised peak memory by ~225 MiB, 120 of them its KV cache; sent as one step, by ~470 MiB."""


def chunk_tokens(batch: int, hidden_size: int, dtype: torch.dtype) -> int:
    """Tokens per chunk for rows of `batch` x `hidden_size` values of `dtype` (at least 1)."""
    row_bytes = max(1, batch * hidden_size * dtype.itemsize)
    return max(1, min(PREFILL_CHUNK_TOKENS, STEP_PAYLOAD_BYTES // row_bytes))


def prefill_spans(start: int, tokens: int, batch: int, hidden_size: int, dtype: torch.dtype) -> list[tuple[int, int]]:
    """[a, b) spans (offsets into the new tokens) of a step of `tokens` tokens at position
    `start`: at most `chunk_tokens` each, and at most PREFILL_ATTENTION_AREA query x key pairs."""
    cap = chunk_tokens(batch, hidden_size, dtype)
    spans: list[tuple[int, int]] = []
    a = 0
    while a < tokens:
        keys = start + a + cap  # (an upper bound: the chunk's last query sees this many keys)
        size = max(1, min(cap, PREFILL_ATTENTION_AREA // (batch * keys)))
        spans.append((a, min(a + size, tokens)))
        a = spans[-1][1]
    return spans
