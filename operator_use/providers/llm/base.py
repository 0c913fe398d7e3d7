"""The LLM contract: `stream(messages, tools)` yields text deltas, tool calls and usage.

Every provider maps its SDK's errors onto the `LLMError` family so the fallback chain can decide,
without knowing the provider, whether the next model should be tried.
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...messages import HistoryMessage, ToolCall, Usage


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    call: ToolCall


@dataclass(frozen=True, slots=True)
class UsageChunk:
    usage: Usage


@dataclass(frozen=True, slots=True)
class FinishChunk:
    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class ProgressChunk:
    """The model produced output the loop does not use piece by piece (tool calls, reasoning).

    It tells the stream limits (limits.py) that the model is alive, so providers send one only for real
    progress: new argument text, a new tool call, new reasoning text, never for an empty delta. `chars`
    counts what is kept in memory (tool calls: `tool_call_chars`; reasoning is not kept, so it counts 0)
    and `calls` the tool calls it started. Consumers ignore it.
    """

    chars: int = 0
    calls: int = 0


# What one tool call costs against llm.max_output_chars besides its id, name and arguments: its bookkeeping,
# so endless calls with empty arguments still reach the cap.
TOOL_CALL_OVERHEAD_CHARS = 64


def tool_call_chars(call_id: str | None, name: str | None) -> int:
    return TOOL_CALL_OVERHEAD_CHARS + len(call_id or "") + len(name or "")


LLMChunk = TextChunk | ToolCallChunk | UsageChunk | FinishChunk | ProgressChunk


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """What the model is told about a tool: name, description and a JSON schema of its parameters."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_tool_arguments(text: str) -> dict[str, Any]:
    """Models sometimes emit broken JSON; keep the raw text so the tool layer can report it."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_raw": text}


class LLMError(Exception):
    """Base of provider errors. `retryable` errors make the fallback chain try the next model."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after


class AuthError(LLMError):
    """Bad or missing key: never fall back (the next model would hide a configuration mistake)."""


class BadRequestError(LLMError):
    """The request itself is wrong (context too long, invalid schema)."""


class RateLimitError(LLMError):
    retryable = True


class OverloadedError(LLMError):
    retryable = True


class ServerError(LLMError):
    retryable = True


class TimeoutError_(LLMError):
    retryable = True


class ConnectionError_(LLMError):
    retryable = True


class StreamCutOff(LLMError):
    """The reply stopped part-way (a stream limit hit, the connection dropped). `user_message` is for the chat;
    the text already streamed stays."""

    user_message = "The reply was cut off."

    def __init__(self, message: str, *, user_message: str, provider: str = "", model: str = "") -> None:
        super().__init__(message, provider=provider, model=model)
        self.user_message = user_message


class ConnectionDropped(StreamCutOff):
    """The stream ended, or broke, before the model's finish but after text was streamed: only a cut-off
    reply is left (before any text, providers raise a `ConnectionError_`, so the next model may answer)."""

    # As for a ConnectionError_: the fallback chain counts it against the model's circuit breaker, and,
    # text having been streamed, re-raises it instead of falling back.
    retryable = True


class LLM(abc.ABC):
    """One model at one provider."""

    provider: str = "llm"

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"

    @abc.abstractmethod
    def stream(
        self, messages: Sequence[HistoryMessage], tools: Sequence[ToolSchema] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream one completion. Raises an `LLMError` subclass on failure."""

    async def aclose(self) -> None:
        return None
