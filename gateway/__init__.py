"""`swarm serve`: a gateway that puts a swarm behind text APIs any program can call.

The gateway holds a model's tokenizer, embeddings and LM head and a swarm client (the
blocks run on the swarm's servers), and serves:

- OpenAI-compatible HTTP (`openai_api`): /v1/models, /v1/completions, /v1/chat/completions
  (SSE streaming), errors in OpenAI's format;
- gRPC `swarm.v1.TextGeneration` (`grpc_service`, messages in `text_codec`);
- `GET /api/v1/swarm` (`swarm_view`): the swarm map of `swarm status --json`, plus
  each server's reachability and next-hop latencies;
- a live web page at `/` (`static/`, plain HTML + JS) and `/metrics` (`metrics`).

Modules: `config` (GatewayConfig), `sampling` (validated request options, pure),
`requests` (OpenAI body validation, pure), `text_stream` (token ids -> text deltas and stop
strings, pure), `engine` (decoding through the swarm off the event loop), `http_app`,
`server` (process lifecycle), `cli` (the `serve` subcommand).

Imports: client and swarm, never node (an import contract in pyproject.toml says so).
"""
