"""`swarm chat`: a conversation through the swarm that keeps its KV caches between turns.

Each turn sends only the new tokens: the conversation so far stays in the servers' caches
(one inference session for the whole chat), so a reply costs the new message, not the
history. If the chat template renders the past differently from what was generated, the
session is restarted with the whole conversation (correct, just slower for that turn).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from client.command_setup import CLIENT_FLAGS, add_speculative_flag, positive_int, ranged_float, run_with_model
from client.config import ClientConfig
from swarm.cli_edge import UsageError
from swarm.config_flags import add_config_flags

if TYPE_CHECKING:
    from client.model import DistributedModelForCausalLM

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("chat", help="chat with a model through the swarm",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, ClientConfig, only=CLIENT_FLAGS)
    p.add_argument("--model", default="default",
                   help="checkpoint directory or hub id for the tokenizer, embeddings and head "
                        "('default': SmolLM2-135M-Instruct)")
    p.add_argument("--model-name", help="name the servers announce (default: the checkpoint's directory name)")
    p.add_argument("--system", help="a system message to start the conversation with")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="most tokens per reply (default 256)")
    p.add_argument("--max-length", type=positive_int, default=2048, help="most tokens in the whole chat (default 2048)")
    p.add_argument("--temperature", type=ranged_float(0.0), default=0.0,
                   help="sampling temperature; 0 = greedy (default)")
    add_speculative_flag(p, "greedy replies only")
    p.set_defaults(run=run)


def _conversation_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    return list(encoded["input_ids"])


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens >= args.max_length:  # no reply would fit the chat's session
        raise UsageError(f"--max-new-tokens {args.max_new_tokens} leaves no room for the conversation in "
                         f"--max-length {args.max_length}; give a larger --max-length or fewer new tokens")
    return run_with_model(args, _converse)


def _converse(args: argparse.Namespace, tokenizer: Any, model: DistributedModelForCausalLM) -> None:
    import torch
    from transformers import TextStreamer

    sampling: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "do_sample": args.temperature > 0,
                                "speculative": "auto" if args.speculative is None else args.speculative}
    if args.temperature > 0:
        sampling["temperature"] = args.temperature
    messages = [{"role": "system", "content": args.system}] if args.system else []
    held: list[int] = []  # what the session holds: prompts and replies (last token pending)
    with contextlib.ExitStack() as session:
        for text in _user_lines():
            messages.append({"role": "user", "content": text})
            ids = _conversation_ids(tokenizer, messages)
            if not held or ids[: len(held)] != held or len(ids) + args.max_new_tokens > args.max_length:
                # first turn, a past that renders differently, or no room left: start over
                logger.info("new session with the whole conversation (%d tokens)", len(ids))
                session.close()
                session.enter_context(model.inference_session(max_length=args.max_length))
                held = []
            new = torch.tensor([ids[len(held):]])
            began = time.perf_counter()
            out = model.generate(new, streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
                                 **sampling)
            reply = out[0, new.shape[1]:].tolist()
            held = ids + reply
            messages.append({"role": "assistant", "content": tokenizer.decode(reply, skip_special_tokens=True)})
            print(f"[{len(reply)} tokens in {time.perf_counter() - began:.2f} s]", file=sys.stderr, flush=True)


def _user_lines() -> Iterator[str]:
    """The user's messages: prompted lines on a terminal, else stdin's lines; /exit ends."""
    while True:
        try:
            line = input("> ") if sys.stdin.isatty() else sys.stdin.readline()
        except EOFError:
            return
        if not line and not sys.stdin.isatty():
            return
        text = line.strip()
        if text in ("/exit", "/quit"):
            return
        if text:
            yield text
