"""A scripted fake of the OpenAI chat-completions and Anthropic Messages HTTP APIs.

Tests point the real SDKs at it, so request building, SSE parsing and error mapping are exercised
end to end without a network:

    async with FakeLLMServer([Reply(text="hi"), ErrorTurn(status=529)]) as server:
        llm = OpenAILLM("fake-model", "k", base_url=server.openai_base_url)

Each request consumes the next scripted turn; when the script is empty the `responder` (if any)
answers from the request. With `api_key=` set, a request carrying another key gets the provider's 401.
Standalone, for CLI tests in tmux:

    python -m tests.fakes.llm_server --port 8799 --script turns.json   # or --echo (the default)
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import signal
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..support.serve import serve

# --- script ----------------------------------------------------------------------------------


@dataclass
class Reply:
    text: str = ""
    # Each: {"name": str, "arguments": dict | str, "id": optional str}. A str is sent verbatim (bad JSON tests).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    delay_per_chunk: float = 0.0
    chunk_size: int = 4
    # Overrides of the token counts otherwise estimated from the request and reply sizes.
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    finish_reason: str | None = None
    # Streaming stops after the first text chunk until this is set: lets a test act mid-reply deterministically.
    gate: asyncio.Event | None = None
    # The stream ends after the text and tool calls but before the finish (OpenAI: no finish_reason, usage or
    # [DONE]; Anthropic: no message_delta or message_stop): "eof" closes it cleanly, "reset" drops the
    # connection mid-body.
    unfinished: str | None = None


@dataclass
class ErrorTurn:
    status: int = 500
    retry_after: float | str | None = None
    message: str | None = None
    # Overrides the error type the status implies (e.g. "overloaded_error" sent with a 200 mid-stream).
    type: str | None = None
    # When set, this text is streamed first and the error is then sent as an in-stream error event.
    after_text: str | None = None


@dataclass
class Endless:
    """A streamed reply that never finishes (stream-limit tests). After `text`, forever, every `interval`
    seconds: an SSE comment `: keep-alive` (and, to Anthropic clients, a `ping` event) when `keepalive`,
    otherwise `piece` as a text token, or as tool-call arguments when `tool_call` names a tool (an empty
    `piece` sends empty argument deltas), or, with `new_calls`, a whole new call of that tool each time."""

    text: str = ""
    piece: str = "la "
    interval: float = 0.05
    keepalive: bool = False
    tool_call: str | None = None
    new_calls: bool = False


Turn = Reply | ErrorTurn | Endless
TurnLike = Reply | ErrorTurn | Endless | dict | str


def to_turn(spec: TurnLike) -> Turn:
    """Accept turns as objects, dicts from a JSON script ({"error": {...}} or reply fields) or plain text."""
    if isinstance(spec, (Reply, ErrorTurn, Endless)):
        return spec
    if isinstance(spec, str):
        return Reply(text=spec)
    if isinstance(spec, dict):
        if "error" in spec:
            err = spec["error"]
            return (
                ErrorTurn(**err)
                if isinstance(err, dict)
                else ErrorTurn(message=str(err), status=spec.get("status", 500))
            )
        if "status" in spec:
            return ErrorTurn(**spec)
        return Reply(**spec)
    raise TypeError(f"not a turn: {spec!r}")


@dataclass
class FakeRequest:
    """What a responder sees: which API was called and the parsed JSON body."""

    api: str  # "openai" | "anthropic"
    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    def last_user_text(self) -> str:
        """Text of the last user message (tool results excluded)."""
        for msg in reversed(self.messages):
            if msg.get("role") != "user":
                continue
            text = _text_of(msg.get("content"), skip_tool_results=True)
            if text:
                return text
        return ""

    def last_tool_result(self) -> str | None:
        """Content of the most recent tool result, if the last message carries one."""
        if not self.messages:
            return None
        last = self.messages[-1]
        if last.get("role") == "tool":
            return _text_of(last.get("content"))
        if self.api == "anthropic" and isinstance(last.get("content"), list):
            results = [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                return _text_of(results[-1].get("content"))
        return None


def _text_of(content: Any, skip_tool_results: bool = False) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                out.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result" and not skip_tool_results:
                out.append(_text_of(block.get("content")))
        return "\n".join(out)
    return ""


Responder = Callable[[FakeRequest], TurnLike | Awaitable[TurnLike]]


def echo_responder(chunk_size: int = 3, delay_per_chunk: float = 0.0) -> Responder:
    def respond(request: FakeRequest) -> Reply:
        return Reply(
            text=f"You said: {request.last_user_text()}", chunk_size=chunk_size, delay_per_chunk=delay_per_chunk
        )

    return respond


@dataclass
class RecordedCall:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


# --- server ----------------------------------------------------------------------------------


class FakeLLMServer:
    def __init__(
        self,
        script: Iterable[TurnLike] = (),
        *,
        responder: Responder | None = None,
        models: Iterable[str] = ("fake-model",),
        instant: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        # When set, a request with another key (OpenAI: Authorization Bearer; Anthropic: x-api-key) gets the
        # provider's 401, as a refused key does.
        self.api_key = api_key
        self.script: deque[Turn] = deque(to_turn(t) for t in script)
        self.responder = responder
        self.models = list(models)
        # Benchmarks: no delays, whole text in one chunk, no gates.
        self.instant = instant
        self.host = host
        self.port = port
        # Parsed JSON bodies of the POSTs, in arrival order; `calls` also keeps method, path and headers.
        self.requests: list[dict[str, Any]] = []
        self.calls: list[RecordedCall] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        # Streamed responses still being written; a client that closes its stream brings this back down.
        self.open_streams = 0
        self._streams_changed = asyncio.Condition()

    # public helpers

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        # The Anthropic SDK appends /v1/messages itself.
        return self.base_url

    def push(self, *turns: TurnLike) -> None:
        self.script.extend(to_turn(t) for t in turns)

    async def wait_for_requests(self, count: int) -> None:
        """Until at least `count` POSTs have arrived (pair with pytest-timeout, never with sleeps)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def wait_streams_closed(self) -> None:
        """Until no streamed response is being written (an `Endless` one ends only when the client hangs up)."""
        async with self._streams_changed:
            await self._streams_changed.wait_for(lambda: self.open_streams == 0)

    # lifecycle

    async def start(self) -> FakeLLMServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/chat/completions", self._chat_completions)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        self._runner, self.port = await serve(app, self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # handlers

    async def _record(self, request: web.Request, api: str) -> FakeRequest:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {}
        headers = dict(request.headers)
        self.calls.append(RecordedCall(request.method, request.path, headers, body))
        async with self._arrived:
            self.requests.append(body)
            self._arrived.notify_all()
        return FakeRequest(api=api, path=request.path, body=body, headers=headers)

    def _refused(self, request: web.Request, api: str) -> web.Response | None:
        if self.api_key is None:
            return None
        auth = request.headers.get("Authorization", "")
        given = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else request.headers.get("x-api-key")
        if given == self.api_key:
            return None
        return _error_response(ErrorTurn(status=401, message="Incorrect API key provided"), api)

    async def _next_turn(self, req: FakeRequest) -> Turn:
        if self.script:
            return self.script.popleft()
        if self.responder is not None:
            result = self.responder(req)
            if inspect.isawaitable(result):
                result = await result
            return to_turn(result)
        return ErrorTurn(status=500, message="fake llm server: script exhausted and no responder")

    async def _models(self, request: web.Request) -> web.Response:
        self.calls.append(RecordedCall(request.method, request.path, dict(request.headers), None))
        refused = self._refused(request, "anthropic" if "x-api-key" in request.headers else "openai")
        if refused is not None:
            return refused
        data = [
            {
                "id": m,
                "object": "model",
                "type": "model",
                "created": 0,
                "owned_by": "fake",
                "display_name": m,
                "created_at": "2024-01-01T00:00:00Z",
            }
            for m in self.models
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": self.models[0] if self.models else None,
                "last_id": self.models[-1] if self.models else None,
            }
        )

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        req = await self._record(request, "openai")
        refused = self._refused(request, "openai")
        if refused is not None:
            return refused
        turn = await self._next_turn(req)
        if isinstance(turn, ErrorTurn) and turn.after_text is None:
            return _error_response(turn, "openai")
        if not req.stream:
            if isinstance(turn, (ErrorTurn, Endless)):
                return _error_response(_non_streamed(turn), "openai")
            return web.json_response(_openai_completion(req, turn))
        return await self._streamed(self._openai_stream(request, req, turn))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        req = await self._record(request, "anthropic")
        refused = self._refused(request, "anthropic")
        if refused is not None:
            return refused
        turn = await self._next_turn(req)
        if isinstance(turn, ErrorTurn) and turn.after_text is None:
            return _error_response(turn, "anthropic")
        if not req.stream:
            if isinstance(turn, (ErrorTurn, Endless)):
                return _error_response(_non_streamed(turn), "anthropic")
            return web.json_response(_anthropic_message(req, turn))
        return await self._streamed(self._anthropic_stream(request, req, turn))

    # streaming

    async def _streamed(self, writing: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        async with self._streams_changed:
            self.open_streams += 1
        try:
            return await writing
        except ConnectionResetError:
            # The client gave up (timeout test, cancelled turn): nothing left to send it.
            return web.Response(status=499)
        finally:
            async with self._streams_changed:
                self.open_streams -= 1
                self._streams_changed.notify_all()

    async def _open_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        return response

    def _pieces(self, text: str, size: int) -> list[str]:
        if not text:
            return []
        if self.instant:
            return [text]
        size = max(1, size)
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def _pace(self, reply: Reply, index: int) -> None:
        if self.instant:
            return
        if index == 2 and reply.gate is not None:  # after the first chunk, as documented on Reply.gate
            await reply.gate.wait()
        if reply.delay_per_chunk > 0:
            await asyncio.sleep(reply.delay_per_chunk)

    async def _openai_stream(self, request: web.Request, req: FakeRequest, turn: Turn) -> web.StreamResponse:
        response = await self._open_sse(request)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())

        async def send(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> None:
            chunk: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req.model,
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            chunk.update(extra)
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        if isinstance(turn, Endless):
            for piece in self._pieces(turn.text, 4):
                await send({"content": piece})
            if turn.tool_call:
                await send(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": f"call_{uuid.uuid4().hex[:12]}",
                                "type": "function",
                                "function": {"name": turn.tool_call, "arguments": '{"text": "'},
                            }
                        ]
                    }
                )
            calls = 1
            while True:  # until the client hangs up: the next write then raises ConnectionResetError
                await asyncio.sleep(turn.interval)
                if turn.keepalive:
                    await response.write(b": keep-alive\n\n")
                elif turn.tool_call and turn.new_calls:
                    await send(
                        {
                            "tool_calls": [
                                {
                                    "index": calls,
                                    "id": f"call_{calls}",
                                    "type": "function",
                                    "function": {"name": turn.tool_call, "arguments": turn.piece},
                                }
                            ]
                        }
                    )
                    calls += 1
                elif turn.tool_call:
                    await send({"tool_calls": [{"index": 0, "function": {"arguments": turn.piece}}]})
                else:
                    await send({"content": turn.piece})
        if isinstance(turn, ErrorTurn):
            for piece in self._pieces(turn.after_text or "", 4):
                await send({"content": piece})
            err = _openai_error_body(turn)
            await response.write(f"data: {json.dumps(err)}\n\n".encode())
            await response.write_eof()
            return response

        reply = turn
        n = 0
        for piece in self._pieces(reply.text, reply.chunk_size):
            n += 1
            await self._pace(reply, n)
            await send({"content": piece})
        for i, call in enumerate(reply.tool_calls):
            args = _args_text(call)
            await send(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                            "type": "function",
                            "function": {"name": call["name"], "arguments": ""},
                        }
                    ]
                }
            )
            # Split the arguments so clients must accumulate them across chunks, as with real servers.
            for piece in self._pieces(args, max(1, reply.chunk_size)):
                n += 1
                await self._pace(reply, n)
                await send({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        if reply.unfinished:
            return await _end_unfinished(request, response, reply.unfinished)
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        await send({}, finish)
        if (req.body.get("stream_options") or {}).get("include_usage"):
            inp, out, cached = _usage(req, reply)
            await send(
                None,
                usage={
                    "prompt_tokens": inp,
                    "completion_tokens": out,
                    "total_tokens": inp + out,
                    "prompt_tokens_details": {"cached_tokens": cached},
                },
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _anthropic_stream(self, request: web.Request, req: FakeRequest, turn: Turn) -> web.StreamResponse:
        response = await self._open_sse(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        if isinstance(turn, Endless):
            return await self._anthropic_endless(response, event, turn)
        reply = turn if isinstance(turn, Reply) else Reply(text=turn.after_text or "")
        inp, out, cached = _usage(req, reply)
        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{uuid.uuid4().hex[:12]}",
                    "type": "message",
                    "role": "assistant",
                    "model": req.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": inp - cached,
                        "output_tokens": 1,
                        "cache_read_input_tokens": cached,
                        "cache_creation_input_tokens": 0,
                    },
                },
            },
        )
        await event("ping", {"type": "ping"})
        index = 0
        n = 0
        if reply.text:
            await event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            for piece in self._pieces(reply.text, reply.chunk_size if isinstance(turn, Reply) else 4):
                n += 1
                await self._pace(reply, n)
                await event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                )
            if isinstance(turn, ErrorTurn):
                await event("error", _anthropic_error_body(turn))
                await response.write_eof()
                return response
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        elif isinstance(turn, ErrorTurn):
            await event("error", _anthropic_error_body(turn))
            await response.write_eof()
            return response
        for call in reply.tool_calls:
            await event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:12]}",
                        "name": call["name"],
                        "input": {},
                    },
                },
            )
            for piece in self._pieces(_args_text(call), max(1, reply.chunk_size)):
                n += 1
                await self._pace(reply, n)
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        if reply.unfinished:
            return await _end_unfinished(request, response, reply.unfinished)
        stop = _anthropic_stop(reply)
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": out},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

    async def _anthropic_endless(
        self, response: web.StreamResponse, event: Callable[[str, dict[str, Any]], Awaitable[None]], turn: Endless
    ) -> web.StreamResponse:
        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{uuid.uuid4().hex[:12]}",
                    "type": "message",
                    "role": "assistant",
                    "model": "fake-model",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 1, "output_tokens": 1},
                },
            },
        )
        await event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        for piece in self._pieces(turn.text, 4):
            await event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        if turn.tool_call:
            await event("content_block_stop", {"type": "content_block_stop", "index": 0})
            await event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": f"toolu_{uuid.uuid4().hex[:12]}",
                        "name": turn.tool_call,
                        "input": {},
                    },
                },
            )
            await event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"text": "'},
                },
            )
        index = 2
        while True:  # until the client hangs up: the next write then raises ConnectionResetError
            await asyncio.sleep(turn.interval)
            if turn.keepalive:
                await response.write(b": keep-alive\n\n")
                await event("ping", {"type": "ping"})
            elif turn.tool_call and turn.new_calls:
                await event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": f"toolu_{index}",
                            "name": turn.tool_call,
                            "input": {},
                        },
                    },
                )
                if turn.piece:
                    await event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": turn.piece},
                        },
                    )
                await event("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
            elif turn.tool_call:
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": turn.piece},
                    },
                )
            else:
                await event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": turn.piece}},
                )


async def _end_unfinished(request: web.Request, response: web.StreamResponse, how: str) -> web.StreamResponse:
    if how == "reset":
        # No terminating chunk: the client sees the body break off, as when a proxy or the network fails.
        assert request.transport is not None
        request.transport.close()
        return response
    await response.write_eof()
    return response


# --- wire formats ----------------------------------------------------------------------------

_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("insufficient_permissions", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "overloaded"),
    529: ("overloaded_error", "overloaded"),
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_DEFAULT_MESSAGES = {
    401: "Invalid API key",
    403: "Permission denied",
    404: "Model not found",
    429: "Rate limit reached",
    500: "Internal server error",
    503: "Service unavailable",
    529: "Overloaded",
}


def _default_message(turn: ErrorTurn) -> str:
    if turn.message:
        return turn.message
    if turn.type and "overloaded" in turn.type:
        return "Overloaded"
    return _DEFAULT_MESSAGES.get(turn.status, f"Error {turn.status}")


def _openai_error_body(turn: ErrorTurn) -> dict[str, Any]:
    etype, code = _OPENAI_TYPES.get(
        turn.status, ("server_error" if turn.status >= 500 else "invalid_request_error", None)
    )
    return {"error": {"message": _default_message(turn), "type": turn.type or etype, "param": None, "code": code}}


def _anthropic_error_body(turn: ErrorTurn) -> dict[str, Any]:
    etype = turn.type or _ANTHROPIC_TYPES.get(
        turn.status, "api_error" if turn.status >= 500 else "invalid_request_error"
    )
    return {
        "type": "error",
        "error": {"type": etype, "message": _default_message(turn)},
        "request_id": f"req_{uuid.uuid4().hex[:12]}",
    }


def _error_response(turn: ErrorTurn, api: str) -> web.Response:
    body = _openai_error_body(turn) if api == "openai" else _anthropic_error_body(turn)
    headers = {}
    if turn.retry_after is not None:
        headers["Retry-After"] = str(turn.retry_after)
    # Never invite the SDK to retry on its own; the code under test decides.
    headers["x-should-retry"] = "false"
    return web.json_response(body, status=turn.status, headers=headers)


def _non_streamed(turn: ErrorTurn | Endless) -> ErrorTurn:
    if isinstance(turn, ErrorTurn):
        return turn
    return ErrorTurn(status=400, message="fake llm server: an Endless turn needs a streamed request")


def _args_text(call: dict[str, Any]) -> str:
    args = call.get("arguments", {})
    return args if isinstance(args, str) else json.dumps(args)


def _usage(req: FakeRequest, reply: Reply) -> tuple[int, int, int]:
    # Roughly four characters a token: enough for tests that check usage is reported at all.
    prompt = len(json.dumps(req.body.get("messages", []))) + len(json.dumps(req.body.get("system", "")))
    inp = reply.input_tokens if reply.input_tokens is not None else max(1, prompt // 4)
    produced = len(reply.text) + sum(len(_args_text(c)) for c in reply.tool_calls)
    out = reply.output_tokens if reply.output_tokens is not None else max(1, produced // 4)
    return inp, out, min(reply.cache_read_tokens, inp)


def _anthropic_stop(reply: Reply) -> str:
    if reply.finish_reason:
        return {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}.get(
            reply.finish_reason, reply.finish_reason
        )
    return "tool_use" if reply.tool_calls else "end_turn"


def _openai_completion(req: FakeRequest, reply: Reply) -> dict[str, Any]:
    inp, out, cached = _usage(req, reply)
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": c["name"], "arguments": _args_text(c)},
            }
            for c in reply.tool_calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": inp,
            "completion_tokens": out,
            "total_tokens": inp + out,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def _anthropic_message(req: FakeRequest, reply: Reply) -> dict[str, Any]:
    inp, out, cached = _usage(req, reply)
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    for c in reply.tool_calls:
        args = c.get("arguments", {})
        content.append(
            {
                "type": "tool_use",
                "id": c.get("id") or f"toolu_{uuid.uuid4().hex[:12]}",
                "name": c["name"],
                "input": json.loads(args) if isinstance(args, str) else args,
            }
        )
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": _anthropic_stop(reply),
        "stop_sequence": None,
        "usage": {
            "input_tokens": inp - cached,
            "output_tokens": out,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0,
        },
    }


# --- standalone ------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    script: list[Any] = []
    if args.script:
        with open(args.script, encoding="utf-8") as fh:
            script = json.load(fh)
    responder = echo_responder(chunk_size=args.chunk_size, delay_per_chunk=args.delay)
    if args.script and not args.echo:
        responder = None
    server = FakeLLMServer(
        script,
        responder=responder,
        instant=args.instant,
        host=args.host,
        port=args.port,
        models=args.model or ["fake-model"],
        api_key=args.api_key,
    )
    await server.start()
    print(f"fake LLM server listening on {server.base_url} (OpenAI: {server.openai_base_url})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Scripted fake OpenAI/Anthropic API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--script", help="JSON list of turns; after it runs out, --echo answers if given")
    parser.add_argument(
        "--echo", action="store_true", help="answer 'You said: <last user text>' (the default without --script)"
    )
    parser.add_argument("--instant", action="store_true", help="no delays, one chunk per reply")
    parser.add_argument("--chunk-size", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between echo chunks")
    parser.add_argument("--model", action="append", help="model id listed by /v1/models (repeatable)")
    parser.add_argument("--api-key", help="accept only this API key (others get a 401)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
