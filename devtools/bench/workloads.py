"""What the benchmarks time: greedy decoding and batch forwards, on the swarm and locally.

Both contenders do the same work per generated token, timed the same way: from the
moment the next token id is known to the moment the one after it is (embedding, all
blocks, final norm, LM head, argmax).

- `LocalReference`: transformers' AutoModelForCausalLM of the same checkpoint in this
  process, with a DynamicCache (what `generate` uses), batch 1.
- `SwarmContender`: the thin client (`DistributedModelForCausalLM`); each step goes
  through an inference session exactly as `generate` drives it (hidden states, position
  ids and the full attention mask), so every server hop is on the clock.

The prompt's prefill is timed separately. Decoding ignores EOS so that every run
generates the same number of tokens.

Each contender's decoding is also a generator of its timed pieces (`GreedySteps`: the
prefill, then one step at a time), so that a benchmark can run several in lockstep
(`lockstep`): one step of each in turn, so that the machine's drift over seconds (other
virtual machines on the host, frequency changes) hits every contender alike instead of
whichever ran in a slow second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from client.model import DistributedModelForCausalLM


@dataclass(frozen=True)
class DecodeRun:
    """One greedy decoding run."""

    tokens: tuple[int, ...]
    """Generated ids (the first comes from the prefill)."""
    prefill_seconds: float
    step_seconds: tuple[float, ...]
    """One per generated token after the first."""


GreedySteps = Generator[None, None, DecodeRun]
"""A greedy decoding run a timed piece at a time: it yields after the prefill and after each
step (nothing of its own is held across a yield but its session) and returns the run."""


def run_through(steps: GreedySteps) -> DecodeRun:
    """Runs a decoding to its end."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def lockstep(decodings: Mapping[str, GreedySteps]) -> dict[str, DecodeRun]:
    """Runs decodings in turn, one piece of each (in the mapping's order), until all end."""
    runs: dict[str, DecodeRun] = {}
    live = dict(decodings)
    try:
        while live:
            for name, steps in list(live.items()):
                try:
                    next(steps)
                except StopIteration as done:
                    runs[name] = done.value
                    del live[name]
    finally:
        for steps in live.values():  # an error in one: the others close their sessions
            steps.close()
    return runs


class Decoder(Protocol):
    """Something whose greedy decoding the benchmarks can time."""

    def decode(self, prompt_ids: torch.Tensor, steps: int) -> DecodeRun: ...

    def decoding(self, prompt_ids: torch.Tensor, steps: int) -> GreedySteps: ...


class Contender(Decoder, Protocol):
    """A decoder that also runs batch forwards."""

    def forward(self, input_ids: torch.Tensor) -> tuple[float, torch.Tensor]: ...


class LocalReference:
    """The whole model in this process (transformers), float32 unless told otherwise."""

    def __init__(self, path: str, dtype: torch.dtype = torch.float32) -> None:
        from transformers import AutoModelForCausalLM

        self.model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self.model.train(False)  # eval mode (`eval` is untyped)

    def decode(self, prompt_ids: torch.Tensor, steps: int) -> DecodeRun:
        return run_through(self.decoding(prompt_ids, steps))

    def decoding(self, prompt_ids: torch.Tensor, steps: int) -> GreedySteps:
        from transformers import DynamicCache

        times: list[float] = []
        cache = DynamicCache(config=self.model.config)
        # inference mode per piece, not across a yield: lockstep runs other decodings between
        with torch.inference_mode():
            began = time.perf_counter()
            out = self.model(prompt_ids, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            prefill = time.perf_counter() - began
        tokens = [int(token)]
        yield
        for _ in range(steps):
            with torch.inference_mode():
                began = time.perf_counter()
                out = self.model(token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                times.append(time.perf_counter() - began)
            tokens.append(int(token))
            yield
        return DecodeRun(tuple(tokens), prefill, tuple(times))

    def forward(self, input_ids: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Seconds of one full forward of `input_ids` (no cache), and its logits."""
        with torch.inference_mode():
            began = time.perf_counter()
            logits = self.model(input_ids, use_cache=False).logits
            return time.perf_counter() - began, logits


class SwarmContender:
    """The same model through the swarm's servers."""

    def __init__(self, model: DistributedModelForCausalLM) -> None:
        self.model = model
        self.route = ""

    def decode(self, prompt_ids: torch.Tensor, steps: int, until: threading.Event | None = None,
               after_prefill: threading.Barrier | None = None) -> DecodeRun:
        """Greedy decoding of up to `steps` tokens.

        Stops early (after one step at least) once `until` is set; waits at `after_prefill`
        (clients decoding together start stepping together, not during each other's prefill).
        """
        return run_through(self.decoding(prompt_ids, steps, until, after_prefill))

    def decoding(self, prompt_ids: torch.Tensor, steps: int, until: threading.Event | None = None,
                 after_prefill: threading.Barrier | None = None) -> GreedySteps:
        head, length = self.model.head, prompt_ids.shape[1]
        times: list[float] = []
        with self.model.inference_session(max_length=length + steps + 1) as session:
            self.route = session.route
            with torch.inference_mode():  # per piece, as LocalReference.decoding
                mask = torch.ones(1, length, dtype=torch.long)
                positions = torch.arange(length)[None]
                began = time.perf_counter()
                hidden = session.step(head.embed(prompt_ids), positions, mask)
                token = head.logits(hidden[:, -1]).argmax(-1, keepdim=True)
                prefill = time.perf_counter() - began
            tokens = [int(token)]
            if after_prefill is not None:
                after_prefill.wait()
            yield
            for _ in range(steps):
                if until is not None and until.is_set() and times:
                    break
                with torch.inference_mode():
                    began = time.perf_counter()
                    positions = positions[:, -1:] + 1
                    mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
                    hidden = session.step(head.embed(token), positions, mask)
                    token = head.logits(hidden[:, -1]).argmax(-1, keepdim=True)
                    times.append(time.perf_counter() - began)
                tokens.append(int(token))
                yield
        return DecodeRun(tuple(tokens), prefill, tuple(times))

    def forward(self, input_ids: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Seconds of one batch forward through `model.layers` (stateless calls), and logits."""
        with torch.inference_mode():
            began = time.perf_counter()
            logits = self.model(input_ids).logits
            return time.perf_counter() - began, logits
