"""`swarm serve`: run the gateway (OpenAI-compatible HTTP, gRPC TextGeneration, web page).

    swarm serve --initial-peers HOST:PORT [--model default] [--host 127.0.0.1] [--port 8000] [--grpc-port 8001]

Loads the model's tokenizer, embeddings and LM head, joins the swarm as a client and
serves until Ctrl-C or SIGTERM. The transformer blocks run on the swarm's servers.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from client.config import ClientConfig, command_line_peers
from gateway.config import GatewayConfig
from swarm.config_flags import add_config_flags, config_from_args

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Adds the `serve` subcommand to `swarm`."""
    p = subparsers.add_parser("serve", help="serve the swarm over an OpenAI-compatible API, gRPC and a web page",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, ClientConfig, only=("initial_peers", "tls_ca", "swarm_token", "verify_fraction"))
    p.add_argument("--model", default="default",
                   help="checkpoint directory or hub id for the tokenizer, embeddings and head "
                        "('default': SmolLM2-135M-Instruct)")
    p.add_argument("--model-name", help="name the servers announce (default: the checkpoint's directory name)")
    add_config_flags(p, GatewayConfig)
    # other `swarm` commands log warnings only; a long-running service says what it does
    p.set_defaults(run=run, log_level="INFO")


def run(args: argparse.Namespace) -> int:
    # torch and transformers load only for this command
    from transformers import AutoTokenizer

    from client.model import AutoDistributedModelForCausalLM
    from gateway.server import serve
    from swarm.cli import run_event_loop
    from swarm.default_model import resolve_model

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    peers = command_line_peers(args.initial_peers)
    model = AutoDistributedModelForCausalLM.from_pretrained(path, peers, model_name=args.model_name,
                                                            config=config_from_args(ClientConfig, args))
    config = config_from_args(GatewayConfig, args)
    # the announced name is what /v1/models lists; the --model text is accepted as an alias
    names = [model.model_name, *([args.model] if args.model != model.model_name else [])]
    try:
        return run_event_loop(lambda: serve(config, model, tokenizer, names))
    finally:
        model.close()
