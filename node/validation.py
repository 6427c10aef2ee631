"""Checks of requests against what the server holds and what a session allows (pure).

Every check raises an error from `swarm.errors` whose message says what was expected and
what came; nothing here touches torch beyond reading shapes, dtypes and (for NaN/Inf)
values. A computation whose output is not finite raises `NonFiniteOutput`, which is no
`SwarmError`: the server answers it INTERNAL (its fault, not the caller's).
"""

from __future__ import annotations

import functools

import torch

from swarm.errors import InvalidInput, NotServed, SessionStateError
from swarm.finite import all_finite
from swarm.protocol import InferenceOpen, InferenceStep, NextHop
from swarm.records import BlockRange

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

RANDOM_ID_CHARS = 32
"""Session ids and push capabilities: 128 random bits as lowercase hex."""

_HEX = frozenset("0123456789abcdef")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]", "::", "[::]"})


class NonFiniteOutput(RuntimeError):
    """The blocks produced NaN or Inf: never sent to anyone (answered INTERNAL)."""


def is_random_id(text: str) -> bool:
    return len(text) == RANDOM_ID_CHARS and set(text) <= _HEX


def check_blocks(model: str, blocks: BlockRange, served_model: str, served: BlockRange) -> None:
    if model != served_model:
        raise NotServed(f"this server serves model {served_model!r}, not {model!r}")
    if not served.covers(blocks):
        raise NotServed(f"this server holds blocks {served} of {served_model}, not {blocks}")


def check_open(request: InferenceOpen, max_batch_size: int, max_length: int) -> None:
    if not 1 <= request.batch_size <= max_batch_size:
        raise InvalidInput(f"batch_size must be 1..{max_batch_size}, got {request.batch_size}")
    if not 1 <= request.max_length <= max_length:
        raise InvalidInput(f"max_length must be 1..{max_length}, got {request.max_length}")
    if request.dtype not in FLOAT_DTYPES:
        raise InvalidInput(f"session dtype must be a float type, got {request.dtype}")
    if not is_random_id(request.session_id):
        raise InvalidInput(f"session_id must be {RANDOM_ID_CHARS} lowercase hex digits (128 random bits), "
                           f"got {len(request.session_id)} characters")
    if request.push_capability and not is_random_id(request.push_capability):
        raise InvalidInput(f"push_capability must be empty or {RANDOM_ID_CHARS} lowercase hex digits")


def check_next_hops(hops: tuple[NextHop, ...], own_addresses: frozenset[str], limit: int = 8) -> None:
    """At most `limit` hops, none naming this server (a loop would make it compute again)."""
    if len(hops) > limit:
        raise InvalidInput(f"a step may name at most {limit} next hops, got {len(hops)}")
    own_hosts, own_ports = _hosts_and_ports(own_addresses)
    for hop in hops:
        host, _, port = hop.address.rpartition(":")
        if hop.address in own_addresses or (port in own_ports and host in own_hosts):
            raise InvalidInput(f"next hop {hop.address} is this server itself")


@functools.lru_cache(maxsize=8)
def _hosts_and_ports(own_addresses: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The hosts (loopback ones too) and ports of a server's own addresses (a server's
    addresses are fixed: worked out once, not at every hop of every token)."""
    hosts = frozenset(address.rpartition(":")[0] for address in own_addresses) | _LOOPBACK_HOSTS
    return hosts, frozenset(address.rpartition(":")[2] for address in own_addresses)


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Input activations must hold no NaN or Inf."""
    if not all_finite(tensor):
        raise InvalidInput(f"{name} hold NaN or Inf values")


def check_finite_output(tensor: torch.Tensor) -> None:
    if not all_finite(tensor):
        raise NonFiniteOutput("the blocks produced NaN or Inf from finite inputs; the answer was withheld")


def check_hidden(hidden: torch.Tensor, hidden_size: int, dtype: torch.dtype, batch: int | None) -> None:
    """hidden states must be [batch, tokens>0, hidden_size] of the agreed dtype."""
    if hidden.dim() != 3 or hidden.shape[1] < 1 or hidden.shape[2] != hidden_size:
        raise InvalidInput(
            f"hidden states must have shape [batch, tokens, {hidden_size}], got {list(hidden.shape)}"
        )
    if batch is not None and hidden.shape[0] != batch:
        raise InvalidInput(f"hidden states have {hidden.shape[0]} rows, the session has {batch}")
    if hidden.dtype != dtype:
        raise InvalidInput(f"hidden states must be {dtype}, got {hidden.dtype}")


def check_step(step: InferenceStep, open_: InferenceOpen, cached: int, hidden_size: int) -> None:
    """A step fits the session: shapes, dtype, cache position and length."""
    check_hidden(step.hidden_states, hidden_size, open_.dtype, open_.batch_size)
    check_finite(step.hidden_states, "hidden states")
    tokens = step.hidden_states.shape[1]
    if step.start_position > cached:
        raise SessionStateError(
            f"step starts at position {step.start_position} but the session holds only {cached} tokens"
        )
    if step.start_position + tokens > open_.max_length:
        raise SessionStateError(
            f"step would hold {step.start_position + tokens} tokens, more than the session's "
            f"max_length {open_.max_length}"
        )
    check_positions_and_mask(step.position_ids, step.attention_mask, open_.batch_size, tokens,
                             step.start_position + tokens)


def check_positions_and_mask(
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    batch: int,
    tokens: int,
    total: int,
) -> None:
    if position_ids is not None:
        if position_ids.dtype not in (torch.int64, torch.int32) or list(position_ids.shape) != [batch, tokens]:
            raise InvalidInput(
                f"position_ids must be int64 [{batch}, {tokens}], got {position_ids.dtype} "
                f"{list(position_ids.shape)}"
            )
        values = position_ids.numpy() if position_ids.device.type == "cpu" else position_ids  # (cheaper ops)
        if position_ids.numel() and (int(values.min()) < 0 or int(values.max()) >= 1 << 20):
            raise InvalidInput("position_ids must lie in [0, 2**20)")
    if attention_mask is not None:
        if attention_mask.dtype.is_floating_point or list(attention_mask.shape) != [batch, total]:
            raise InvalidInput(
                f"attention_mask must be bool or int [{batch}, {total}], got {attention_mask.dtype} "
                f"{list(attention_mask.shape)}"
            )


def default_positions(batch: int, start: int, tokens: int) -> torch.Tensor:
    return torch.arange(start, start + tokens, dtype=torch.int64).expand(batch, tokens)
