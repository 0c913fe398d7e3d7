"""Anthropic Messages API provider (native SDK, streamed raw events)."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import anthropic
from pydantic import SecretStr

from ...messages import AIMessage, HistoryMessage, HumanMessage, SystemMessage, ToolCall, ToolMessage, Usage
from ._errors import error_from_status, error_message, error_type, stream_dropped, timeout_error, transport_errors
from .base import (
    LLM,
    FinishChunk,
    LLMChunk,
    LLMError,
    ProgressChunk,
    TextChunk,
    ToolCallChunk,
    ToolSchema,
    UsageChunk,
    parse_tool_arguments,
    tool_call_chars,
)

_TIMEOUTS, _TRANSPORT = transport_errors()

DEFAULT_MAX_TOKENS = 4096

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


class AnthropicLLM(LLM):
    provider = "anthropic"

    def __init__(
        self,
        model: str,
        api_key: str | SecretStr | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_tokens: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        provider: str = "anthropic",
    ) -> None:
        super().__init__(model)
        self.provider = provider
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,  # the fallback chain decides about retries, not the SDK
            default_headers=dict(extra_headers) if extra_headers else None,
        )

    async def stream(
        self, messages: Sequence[HistoryMessage], tools: Sequence[ToolSchema] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        system, chat = to_anthropic_messages(messages)
        kwargs: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": chat, "stream": True}
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = [to_anthropic_tool(t) for t in tools]

        blocks: dict[int, dict[str, Any]] = {}
        # Handed out once message_stop arrives: a call from a reply that never finished must not run.
        calls: list[ToolCall] = []
        usage = Usage()
        saw_usage = False
        finish = "stop"
        stopped = False  # message_stop arrived: the reply is complete
        shown = False  # text went out: from here on, a broken stream can only cut the reply off
        try:
            response = await self._client.messages.create(**kwargs)
            try:
                async for event in response:
                    kind = event.type
                    if kind == "message_start":
                        u = event.message.usage
                        if u is not None:
                            saw_usage = True
                            usage = _start_usage(u)
                    elif kind == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            blocks[event.index] = {"id": block.id, "name": block.name, "json": []}
                            yield ProgressChunk(tool_call_chars(block.id, block.name), calls=1)
                        elif block.type == "text" and block.text:
                            shown = True
                            yield TextChunk(block.text)
                    elif kind == "content_block_delta":
                        # Only deltas that bring something count as progress (see ProgressChunk).
                        delta = event.delta
                        if delta.type == "text_delta" and delta.text:
                            shown = True
                            yield TextChunk(delta.text)
                        elif delta.type == "input_json_delta" and event.index in blocks and delta.partial_json:
                            blocks[event.index]["json"].append(delta.partial_json)
                            yield ProgressChunk(len(delta.partial_json))
                        elif delta.type == "thinking_delta" and delta.thinking:
                            yield ProgressChunk()
                    elif kind == "content_block_stop":
                        slot = blocks.pop(event.index, None)
                        if slot is not None:
                            calls.append(
                                ToolCall(
                                    id=slot["id"],
                                    name=slot["name"],
                                    arguments=parse_tool_arguments("".join(slot["json"])),
                                )
                            )
                    elif kind == "message_delta":
                        if event.delta.stop_reason:
                            finish = _FINISH.get(event.delta.stop_reason, event.delta.stop_reason)
                        if event.usage is not None:
                            saw_usage = True
                            usage = _merge_delta_usage(usage, event.usage)
                    elif kind == "message_stop":
                        stopped = True
            finally:
                await response.close()
        except anthropic.APIError as exc:
            raise self._map_error(exc, shown=shown) from exc
        except _TIMEOUTS as exc:
            raise timeout_error(self.provider, self.model) from exc
        except _TRANSPORT as exc:
            raise stream_dropped(self.provider, self.model, f"{type(exc).__name__}: {exc}", shown=shown) from exc
        if not stopped:
            # The stream closed cleanly but the reply never finished: a server or proxy dropped it part-way.
            raise stream_dropped(self.provider, self.model, "the stream ended without message_stop", shown=shown)

        for call in calls:
            yield ToolCallChunk(call)
        if saw_usage:
            yield UsageChunk(usage)
        yield FinishChunk(finish)

    def _map_error(self, exc: anthropic.APIError, *, shown: bool = False) -> LLMError:
        if isinstance(exc, anthropic.APITimeoutError):
            return timeout_error(self.provider, self.model)
        if isinstance(exc, anthropic.APIConnectionError):
            return stream_dropped(self.provider, self.model, str(exc), shown=shown)
        status = getattr(exc, "status_code", None)
        response = getattr(exc, "response", None)
        headers = response.headers if response is not None else None
        if status is not None and status < 400:
            # An `error` event inside a 200 stream: only the error type says what happened.
            status = None
        body = exc.body
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


def _start_usage(u: Any) -> Usage:
    # Anthropic's input_tokens excludes cached tokens; count them in so input means "whole prompt" everywhere.
    cache_read = getattr(u, "cache_read_input_tokens", None) or 0
    cache_write = getattr(u, "cache_creation_input_tokens", None) or 0
    return Usage(
        input_tokens=(u.input_tokens or 0) + cache_read + cache_write,
        output_tokens=u.output_tokens or 0,
        cache_read_tokens=cache_read,
    )


def _merge_delta_usage(current: Usage, u: Any) -> Usage:
    # message_delta carries cumulative output tokens, and sometimes the final input counts as well.
    input_tokens = getattr(u, "input_tokens", None)
    cache_read = getattr(u, "cache_read_input_tokens", None)
    cache_write = getattr(u, "cache_creation_input_tokens", None)
    if input_tokens is not None:
        full_input = input_tokens + (cache_read or current.cache_read_tokens) + (cache_write or 0)
    else:
        full_input = current.input_tokens
    return Usage(
        input_tokens=full_input,
        output_tokens=getattr(u, "output_tokens", None) or current.output_tokens,
        cache_read_tokens=cache_read if cache_read is not None else current.cache_read_tokens,
    )


def to_anthropic_messages(messages: Sequence[HistoryMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split off the system prompt and build alternating user/assistant turns of content blocks."""
    system: list[dict[str, Any]] = []
    chat: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        # The API requires alternation; same-role neighbours (e.g. tool results then a new user message) merge.
        if chat and chat[-1]["role"] == role:
            chat[-1]["content"].extend(blocks)
        else:
            chat.append({"role": role, "content": blocks})

    for m in messages:
        if isinstance(m, SystemMessage):
            if m.content:
                system.append({"type": "text", "text": m.content})
        elif isinstance(m, HumanMessage):
            blocks: list[dict[str, Any]] = [_image_block(i) for i in m.images]
            if m.content or not blocks:
                blocks.append({"type": "text", "text": m.content or "(empty)"})
            add("user", blocks)
        elif isinstance(m, AIMessage):
            blocks = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            add("assistant", blocks)
        elif isinstance(m, ToolMessage):
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if m.is_error:
                block["is_error"] = True
            add("user", [block])

    if system:
        # Everything up to here is the stable prefix; marking its end lets the API cache it across turns.
        system[-1]["cache_control"] = {"type": "ephemeral"}
    return system, chat


def _image_block(image: Any) -> dict[str, Any]:
    if not image.data and image.url:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": image.mime, "data": base64.b64encode(image.data).decode("ascii")},
    }


def to_anthropic_tool(tool: ToolSchema) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.parameters or {"type": "object", "properties": {}},
    }
