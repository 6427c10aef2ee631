"""Which drafted tokens to keep, given the model's scores at every drafted position.

A verification step runs the last token plus k drafted tokens through the model at
once, giving k+1 distributions: p_0 (after the text so far), p_1 (after draft[0]), ...,
p_k (after all drafts). Acceptance walks the drafts in order:

- greedy: keep draft[j] while it is the argmax of p_j; the first mismatch is replaced
  by that argmax (and, if all k matched, argmax p_k is added): exactly the tokens plain
  greedy decoding would produce, 1..k+1 of them per step.
- sampling (Leviathan et al. 2023, Chen et al. 2023): keep draft[j] = x with probability
  min(1, p_j(x) / q_j(x)), q_j being the drafter's distribution; on the first rejection
  sample a replacement from the residual norm(max(0, p_j - q_j)) and stop; if all k are
  kept, sample one more from p_k. Every emitted token is then distributed exactly as
  sampling from p would be. A deterministic drafter (prompt lookup) is q_j = one-hot(x):
  keep with probability p_j(x), and the residual is p_j without x.

Pure: tensors in, token ids out; randomness comes from the `generator` passed in.
"""

from __future__ import annotations

import torch


def greedy_accept(draft: torch.Tensor, scores: torch.Tensor) -> list[int]:
    """Tokens to emit: the accepted prefix of `draft` [k] plus one token from `scores` [k+1, V]."""
    _check(draft, scores)
    targets = scores.argmax(dim=-1)
    emitted: list[int] = []
    for j, token in enumerate(draft.tolist()):
        if int(targets[j]) != token:
            break
        emitted.append(token)
    emitted.append(int(targets[len(emitted)]))
    return emitted


def rejection_sample(draft: torch.Tensor, probs: torch.Tensor, draft_probs: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> list[int]:
    """Tokens to emit (1..k+1) under the rejection-sampling rule.

    `probs` [k+1, V]: the target model's distributions at each position (after the
    logits processors and warpers). `draft_probs` [k, V]: the drafter's; None for a
    deterministic drafter (one-hot on each drafted token).
    """
    _check(draft, probs)
    if draft_probs is not None and draft_probs.shape != (draft.shape[0], probs.shape[1]):
        raise ValueError(f"draft_probs must be [{draft.shape[0]}, {probs.shape[1]}], got {list(draft_probs.shape)}")
    emitted: list[int] = []
    for j, token in enumerate(draft.tolist()):
        p = probs[j]
        q_token = 1.0 if draft_probs is None else float(draft_probs[j, token])
        keep = min(1.0, float(p[token]) / q_token) if q_token > 0 else 0.0
        if float(torch.rand((), generator=generator)) < keep:
            emitted.append(token)
            continue
        if draft_probs is None:
            residual = p.clone()
            residual[token] = 0.0
        else:
            residual = (p - draft_probs[j]).clamp_min(0.0)
        if float(residual.sum()) <= 0.0:  # p <= q everywhere: only rounding can bring us here
            residual = p
        emitted.append(int(torch.multinomial(residual / residual.sum(), 1, generator=generator)))
        return emitted
    emitted.append(int(torch.multinomial(probs[len(emitted)], 1, generator=generator)))
    return emitted


def _check(draft: torch.Tensor, scores: torch.Tensor) -> None:
    if draft.dim() != 1 or scores.dim() != 2 or scores.shape[0] != draft.shape[0] + 1:
        raise ValueError(f"need draft [k] and scores [k+1, vocab], got {list(draft.shape)} and {list(scores.shape)}")
