"""The fine-tuning run's task: two-number addition in a fixed answer format (pure, seeded).

"Q: 23 plus 45\\nA:" -> " 68\\n". SmolLM2-135M-Instruct answers such prompts in its own
words ("23 + 4...") and gets 0 of them exactly; the format and the sums are learnable by
a LoRA in a few dozen steps. Training and held-out examples come from disjoint seeded
streams (a pair seen in training is never evaluated), so the eval measures what was
learned, not what was memorised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

LOW, HIGH = 10, 49
"""Both operands are drawn from LOW..HIGH."""


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    """What follows the prompt, newline included (the model learns to stop)."""


def examples(seed: int, count: int, exclude: frozenset[tuple[int, int]] = frozenset()) -> list[Example]:
    rng = random.Random(seed)
    out: list[Example] = []
    while len(out) < count:
        a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        if (a, b) not in exclude:
            out.append(Example(f"Q: {a} plus {b}\nA:", f" {a + b}\n"))
    return out


def operands(example: Example) -> tuple[int, int]:
    a, _, b = example.prompt.removeprefix("Q: ").split("\n")[0].partition(" plus ")
    return int(a), int(b)


def batch(tokenizer: object, items: list[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask (right padding) and labels (-100 but on the answer tokens)."""
    rows = []
    for item in items:
        prompt = tokenizer(item.prompt).input_ids  # type: ignore[operator]
        answer = tokenizer(item.answer).input_ids  # type: ignore[operator]
        rows.append((prompt + answer, len(prompt)))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:])
    return input_ids, mask, labels


def is_correct(item: Example, generated: str) -> bool:
    """Exact match of the first generated line with the sum."""
    return generated.split("\n")[0].strip() == item.answer.strip()
