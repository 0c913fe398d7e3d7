"""OpenAI chat-completions provider; also serves every OpenAI-compatible server (see presets.py)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import openai
from pydantic import SecretStr

from ...messages import AIMessage, HistoryMessage, HumanMessage, ImagePart, SystemMessage, ToolCall, ToolMessage, Usage
from ._errors import error_from_status, error_message, error_type, stream_dropped, timeout_error, transport_errors
from .base import (
    LLM,
    TOOL_CALL_OVERHEAD_CHARS,
    FinishChunk,
    LLMChunk,
    LLMError,
    ProgressChunk,
    TextChunk,
    ToolCallChunk,
    ToolSchema,
    UsageChunk,
    parse_tool_arguments,
)

_TIMEOUTS, _TRANSPORT = transport_errors()

# A placeholder key: the SDK refuses to start without one, and letting it read OPENAI_API_KEY from the
# environment would send an OpenAI key to whatever base_url this instance points at.
NO_KEY = "not-needed"

_FINISH = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}


def secret(value: str | SecretStr | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class OpenAILLM(LLM):
    provider = "openai"

    def __init__(
        self,
        model: str,
        api_key: str | SecretStr | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_tokens: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        provider: str = "openai",
        stream_usage: bool = True,
    ) -> None:
        super().__init__(model)
        self.provider = provider
        self.max_tokens = max_tokens
        # Some older compatible servers reject `stream_options`; presets can turn it off.
        self.stream_usage = stream_usage
        self._client = openai.AsyncOpenAI(
            api_key=secret(api_key) or NO_KEY,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,  # the fallback chain decides about retries, not the SDK
            default_headers=dict(extra_headers) if extra_headers else None,
        )

    async def stream(
        self, messages: Sequence[HistoryMessage], tools: Sequence[ToolSchema] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(messages), "stream": True}
        if self.stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        if tools:
            kwargs["tools"] = [to_openai_tool(t) for t in tools]
        if self.max_tokens:
            # OpenAI's reasoning models only accept the newer name; compatible servers only know the old one.
            kwargs["max_completion_tokens" if self.provider == "openai" else "max_tokens"] = self.max_tokens

        calls: dict[int, dict[str, Any]] = {}
        usage: Usage | None = None
        finish: str | None = None
        shown = False  # text went out: from here on, a broken stream can only cut the reply off
        try:
            response = await self._client.chat.completions.create(**kwargs)
            try:
                async for chunk in response:
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                    for choice in chunk.choices or ():
                        delta = choice.delta
                        if delta is not None and delta.content:
                            shown = True
                            yield TextChunk(delta.content)
                        for tc in (delta.tool_calls or ()) if delta is not None else ():
                            progress = _accumulate(calls, tc)
                            if progress is not None:
                                yield progress
                        if delta is not None and _reasoning(delta):
                            yield ProgressChunk()
                        if choice.finish_reason:
                            finish = _FINISH.get(choice.finish_reason, choice.finish_reason)
            finally:
                await response.close()
        except openai.APIError as exc:
            raise self._map_error(exc, shown=shown) from exc
        except _TIMEOUTS as exc:
            raise timeout_error(self.provider, self.model) from exc
        except _TRANSPORT as exc:
            raise stream_dropped(self.provider, self.model, f"{type(exc).__name__}: {exc}", shown=shown) from exc
        if finish is None:
            # The stream closed cleanly but the reply never finished: a server or proxy dropped it part-way.
            raise stream_dropped(self.provider, self.model, "the stream ended without a finish_reason", shown=shown)

        for index in sorted(calls):
            yield ToolCallChunk(_finish_call(calls[index]))
        if usage is not None:
            yield UsageChunk(usage)
        if calls and finish == "stop":
            # Some compatible servers report "stop" even when they called tools.
            finish = "tool_calls"
        yield FinishChunk(finish)

    def _map_error(self, exc: openai.APIError, *, shown: bool = False) -> LLMError:
        if isinstance(exc, openai.APITimeoutError):
            return timeout_error(self.provider, self.model)
        if isinstance(exc, openai.APIConnectionError):
            return stream_dropped(self.provider, self.model, str(exc), shown=shown)
        status = getattr(exc, "status_code", None)
        response = getattr(exc, "response", None)
        headers = response.headers if response is not None else None
        # The SDK already unwrapped `{"error": {...}}` into `body`; errors sent inside a stream have no status.
        body = {"error": exc.body} if isinstance(exc.body, Mapping) else exc.body
        return error_from_status(
            status,
            error_message(body, str(exc)),
            kind=error_type(body),
            headers=headers,
            provider=self.provider,
            model=self.model,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _reasoning(delta: Any) -> bool:
    # Reasoning tokens of compatible servers (DeepSeek, vLLM: `reasoning_content`; OpenRouter: `reasoning`).
    extra = getattr(delta, "model_extra", None) or {}
    return any(isinstance(extra.get(k), str) and extra[k] for k in ("reasoning_content", "reasoning"))


def _accumulate(calls: dict[int, dict[str, Any]], tc: Any) -> ProgressChunk | None:
    """Adds a tool-call delta; returns what it brought, or None when nothing new (an empty delta, a repeated
    id or name): a server repeating those must not keep the idle timeout from firing."""
    # Gemini's compatible endpoint omits `index`; each such delta is then a whole call.
    index = tc.index if tc.index is not None else len(calls)
    new = index not in calls
    slot = calls.setdefault(index, {"id": None, "name": "", "args": []})
    chars = TOOL_CALL_OVERHEAD_CHARS if new else 0
    if tc.id and tc.id != slot["id"]:
        slot["id"] = tc.id
        chars += len(tc.id)
    fn = tc.function
    if fn is not None:
        if fn.name and fn.name != slot["name"]:
            slot["name"] = fn.name
            chars += len(fn.name)
        if fn.arguments:
            slot["args"].append(fn.arguments)
            chars += len(fn.arguments)
    return ProgressChunk(chars, calls=int(new)) if chars else None


def _finish_call(slot: dict[str, Any]) -> ToolCall:
    return ToolCall(
        id=slot["id"] or f"call_{uuid.uuid4().hex[:12]}",
        name=slot["name"],
        arguments=parse_tool_arguments("".join(slot["args"])),
    )


def _usage(u: Any) -> Usage:
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Usage(
        input_tokens=u.prompt_tokens or 0, output_tokens=u.completion_tokens or 0, cache_read_tokens=cached or 0
    )


def image_data_url(image: ImagePart) -> str:
    if not image.data and image.url:
        return image.url
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def to_openai_messages(messages: Sequence[HistoryMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": m.content})
        elif isinstance(m, HumanMessage):
            if m.images:
                parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
                parts += [{"type": "image_url", "image_url": {"url": image_data_url(i)}} for i in m.images]
                out.append({"role": "user", "content": parts})
            else:
                out.append({"role": "user", "content": m.content})
        elif isinstance(m, AIMessage):
            msg: dict[str, Any] = {"role": "assistant", "content": m.content}
            if m.tool_calls:
                # Several servers reject an empty string next to tool calls but accept null.
                msg["content"] = m.content or None
                msg["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
                    }
                    for c in m.tool_calls
                ]
            out.append(msg)
        elif isinstance(m, ToolMessage):
            # Chat completions has no error flag on tool results; say it in the text.
            content = f"Error: {m.content}" if m.is_error and not m.content.lower().startswith("error") else m.content
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": content})
    return out


def to_openai_tool(tool: ToolSchema) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters or {"type": "object", "properties": {}},
        },
    }
