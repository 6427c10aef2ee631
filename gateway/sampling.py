"""Validated generation options shared by the HTTP and gRPC APIs (pure: no I/O).

Every field a request may set is checked here; a bad value raises `InvalidRequest` with
the field's name and what was wrong, which the APIs turn into OpenAI's 400 error or gRPC's
INVALID_ARGUMENT. What it does not do: tokenize, or know the APIs' field spellings
beyond the shared names (temperature, top_p, max_tokens, stop, seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_STOP_STRINGS = 4
"""As OpenAI: up to 4 stop sequences."""
MAX_STOP_CHARS = 256
MAX_SEED = 2**63 - 1
"""torch.Generator seeds are 64-bit; OpenAI documents seeds as integers."""


class InvalidRequest(ValueError):
    """A request the gateway refuses: `param` names the field (None: the whole body)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Sampling:
    """How one request's tokens are chosen and when it stops."""

    max_tokens: int
    temperature: float = 1.0
    """0: greedy (argmax), as `swarm generate` without --temperature."""
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def check_number(value: object, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    """`value` as a float in [low, high] (or (low, high] with low_open); JSON bools refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"'{name}' must be a number, got {value!r}", name)
    if value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InvalidRequest(f"'{name}' must be in {interval}, got {value!r}", name)
    return float(value)


def check_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer, got {value!r}", name)
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be in [{low}, {high}], got {value}", name)
    return value


def check_stop(value: object, name: str = "stop") -> tuple[str, ...]:
    """OpenAI's `stop`: null, a string, or a list of up to 4 non-empty strings."""
    if value is None:
        return ()
    items: Sequence[object] = [value] if isinstance(value, str) else value if isinstance(value, list) else [None]
    if len(items) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"'{name}' may hold at most {MAX_STOP_STRINGS} strings, got {len(items)}", name)
    for item in items:
        if not isinstance(item, str) or not item or len(item) > MAX_STOP_CHARS:
            raise InvalidRequest(
                f"'{name}' must be a string or a list of non-empty strings of at most {MAX_STOP_CHARS} "
                f"characters, got {value!r}", name)
    return tuple(str(item) for item in items)


def make_sampling(*, max_tokens: object, default_max_tokens: int, max_tokens_limit: int,
                  temperature: object = None, top_p: object = None, stop: object = None,
                  seed: object = None, max_tokens_name: str = "max_tokens") -> Sampling:
    """Checks each option (None: its default) and returns the Sampling they make."""
    return Sampling(
        max_tokens=default_max_tokens if max_tokens is None
        else check_int(max_tokens, max_tokens_name, 1, max_tokens_limit),
        temperature=1.0 if temperature is None else check_number(temperature, "temperature", 0.0, 2.0),
        top_p=1.0 if top_p is None else check_number(top_p, "top_p", 0.0, 1.0, low_open=True),
        stop=check_stop(stop),
        seed=None if seed is None else check_int(seed, "seed", -MAX_SEED, MAX_SEED),
    )
