"""gRPC `swarm.v1.TextGeneration` (protos/swarm/v1/text_generation.proto) on the gateway.

Each call streams one GenerateResponse per generated token (its id and the text it
releases) and a last one with the finish reason and usage. Errors end the call with the
status `gateway.errors` maps them to. The server runs on the same event loop as the HTTP
app; generation runs on the engine's threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from gateway.engine import Engine, FinishEvent
from gateway.errors import grpc_status_of, status_of
from gateway.metrics import GatewayMetrics
from gateway.prompts import Prompts
from gateway.requests import Limits
from gateway.text_codec import TextRequest, chat_request, final_response, generate_request, token_response
from swarm.v1 import text_generation_pb2 as pb
from swarm.v1 import text_generation_pb2_grpc

logger = logging.getLogger(__name__)


class TextGenerationService(text_generation_pb2_grpc.TextGenerationServicer):
    """The servicer: decodes a request, generates, streams the answer."""

    def __init__(self, engine: Engine, prompts: Prompts, limits: Limits, metrics: GatewayMetrics) -> None:
        self.engine = engine
        self.prompts = prompts
        self.limits = limits
        self.metrics = metrics

    async def Generate(self, request: pb.GenerateRequest,  # noqa: N802 (the proto's name)
                       context: grpc.aio.ServicerContext[pb.GenerateRequest, pb.GenerateResponse],
                       ) -> AsyncIterator[pb.GenerateResponse]:
        async for response in self._answer("grpc_generate", lambda: generate_request(request, self.limits), context):
            yield response

    async def Chat(self, request: pb.ChatRequest,  # noqa: N802 (the proto's name)
                   context: grpc.aio.ServicerContext[pb.ChatRequest, pb.GenerateResponse],
                   ) -> AsyncIterator[pb.GenerateResponse]:
        async for response in self._answer("grpc_chat", lambda: chat_request(request, self.limits), context):
            yield response

    async def _answer(self, api: str, decode: Callable[[], TextRequest],
                      context: grpc.aio.ServicerContext[object, pb.GenerateResponse],
                      ) -> AsyncIterator[pb.GenerateResponse]:
        self.metrics.in_flight.inc()
        status = "200"
        try:
            parsed = decode()
            ids = await asyncio.get_running_loop().run_in_executor(None, self._prompt_ids, parsed)
            async for event in self.engine.stream(ids, parsed.sampling, api):
                if isinstance(event, FinishEvent):
                    yield final_response(event.reason, event.text, event.prompt_tokens, event.completion_tokens)
                else:
                    yield token_response([event.token_id], event.text)
        except Exception as error:  # mapped to a status; the gateway keeps serving
            status = str(status_of(error))
            message = str(error) if status != "500" else f"internal error: {type(error).__name__}"
            if status == "500":
                logger.error("%s call failed unexpectedly", api, exc_info=error)
            await context.abort(grpc_status_of(error), message)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(api, status).inc()

    def _prompt_ids(self, parsed: TextRequest) -> list[int]:
        self.prompts.check_model(parsed.model)
        if parsed.messages is not None:
            ids, param = self.prompts.chat_ids(parsed.messages), "messages"
        else:
            ids, param = self.prompts.completion_ids(parsed.prompt or ""), "prompt"
        self.prompts.check_length(len(ids), parsed.sampling, param)
        return ids


async def start_grpc_server(service: TextGenerationService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Starts the server; returns it and the bound port. A taken port is an error, not
    a shared one (grpcio sets SO_REUSEPORT unless told not to)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    text_generation_pb2_grpc.add_TextGenerationServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (in use?)")
    await server.start()
    return server, bound
