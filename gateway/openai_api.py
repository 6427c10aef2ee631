"""OpenAI-compatible HTTP endpoints: /v1/models, /v1/completions, /v1/chat/completions.

Bodies are validated by `gateway.requests`; generation is `gateway.engine`'s. With
`stream: true` the answer is Server-Sent Events (one `data: {chunk}` per token's text,
then `data: [DONE]`), as OpenAI sends them. An error before the first byte is an HTTP
error in OpenAI's format; one after it (the swarm failed mid-answer) is a last
`data: {"error": ...}` event, since the status line is already sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.engine import Engine, FinishEvent, TokenEvent
from gateway.errors import error_body, error_response, status_of
from gateway.metrics import GatewayMetrics
from gateway.prompts import Prompts
from gateway.requests import ChatRequest, CompletionRequest, Limits, parse_chat, parse_completion
from gateway.sampling import InvalidRequest, Sampling

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Answer:
    """What the chat and completion endpoints share about one request."""

    api: str  # "completions" or "chat"
    prompt_ids: list[int]
    sampling: Sampling
    stream: bool
    include_usage: bool


class OpenAIApi:
    """The handlers; `routes()` lists them for the app."""

    def __init__(self, engine: Engine, prompts: Prompts, limits: Limits, metrics: GatewayMetrics) -> None:
        self.engine = engine
        self.prompts = prompts
        self.limits = limits
        self.metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/models", self.models), web.post("/v1/completions", self.completions),
                web.post("/v1/chat/completions", self.chat)]

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.prompts.model_name, "object": "model", "created": 0, "owned_by": "swarm"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def _serve(self, request: web.Request, api: str) -> web.StreamResponse:
        self.metrics.in_flight.inc()
        try:
            answer = await self._prepare(request, api)
            response = await (self._stream(request, answer) if answer.stream else self._whole(answer))
        except Exception as error:  # mapped to OpenAI's format; the gateway keeps serving
            self.metrics.requests.labels(api, str(status_of(error))).inc()
            return error_response(error)
        finally:
            self.metrics.in_flight.dec()
        self.metrics.requests.labels(api, str(response.status)).inc()
        return response

    async def _prepare(self, request: web.Request, api: str) -> _Answer:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
        parsed: CompletionRequest | ChatRequest = (
            parse_chat(body, self.limits) if api == "chat" else parse_completion(body, self.limits))
        self.prompts.check_model(parsed.model)
        loop = asyncio.get_running_loop()
        # tokenizing a long prompt takes a while: off the event loop
        if isinstance(parsed, ChatRequest):
            ids = await loop.run_in_executor(None, self.prompts.chat_ids, parsed.messages)
        else:
            ids = await loop.run_in_executor(None, self.prompts.completion_ids, parsed.prompt)
        self.prompts.check_length(len(ids), parsed.sampling, "messages" if api == "chat" else "prompt")
        return _Answer(api, ids, parsed.sampling, parsed.stream, parsed.include_usage)

    async def _whole(self, answer: _Answer) -> web.Response:
        parts: list[str] = []
        finish: FinishEvent | None = None
        async for event in self.engine.stream(answer.prompt_ids, answer.sampling, answer.api):
            parts.append(event.text)
            if isinstance(event, FinishEvent):
                finish = event
        if finish is None:
            raise RuntimeError("the generation ended without a finish event")
        shape = _Shape(answer.api, self.prompts.model_name)
        return web.json_response(shape.whole("".join(parts), finish))

    async def _stream(self, request: web.Request, answer: _Answer) -> web.StreamResponse:
        events = self.engine.stream(answer.prompt_ids, answer.sampling, answer.api)
        first = await _first_event(events)  # errors before the first byte stay HTTP errors
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        shape = _Shape(answer.api, self.prompts.model_name)
        if answer.api == "chat":
            await _send(response, shape.chunk("", None, role=True))
        try:
            async for event in _prepend(first, events):
                if isinstance(event, TokenEvent) and not event.text:
                    continue
                finish = event if isinstance(event, FinishEvent) else None
                if finish is None or event.text:
                    await _send(response, shape.chunk(event.text, None))
                if finish is not None:
                    await _send(response, shape.chunk("", finish.reason))
                    if answer.include_usage:
                        await _send(response, shape.usage_chunk(finish))
        except ConnectionResetError:
            logger.info("client of a streamed %s request went away", answer.api)
            return response
        except Exception as error:  # the status line is gone: the error is the last event
            logger.warning("streamed %s request failed mid-answer: %s", answer.api, error)
            await _send(response, error_body(error))
        finally:
            await events.aclose()  # stops the generation if the client left early
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def _first_event(events: AsyncGenerator[TokenEvent | FinishEvent, None]) -> TokenEvent | FinishEvent:
    return await events.__anext__()


async def _prepend(first: TokenEvent | FinishEvent,
                   rest: AsyncIterator[TokenEvent | FinishEvent]) -> AsyncIterator[TokenEvent | FinishEvent]:
    yield first
    async for event in rest:
        yield event


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())


class _Shape:
    """OpenAI's response objects for one request (same id and timestamp in every chunk)."""

    def __init__(self, api: str, model: str) -> None:
        self.chat = api == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model

    def _object(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def whole(self, text: str, finish: FinishEvent) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish.reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish.reason}
        body = self._object("chat.completion" if self.chat else "text_completion", [choice])
        body["usage"] = _usage(finish)
        return body

    def chunk(self, text: str, finish_reason: str | None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return self._object("chat.completion.chunk", [choice])
        return self._object("text_completion", [{"index": 0, "text": text, "logprobs": None,
                                                  "finish_reason": finish_reason}])

    def usage_chunk(self, finish: FinishEvent) -> dict[str, Any]:
        body = self._object("chat.completion.chunk" if self.chat else "text_completion", [])
        body["usage"] = _usage(finish)
        return body


def _usage(finish: FinishEvent) -> dict[str, int]:
    return {"prompt_tokens": finish.prompt_tokens, "completion_tokens": finish.completion_tokens,
            "total_tokens": finish.prompt_tokens + finish.completion_tokens}
