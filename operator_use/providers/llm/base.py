"""The LLM contract: `stream(messages, tools)` yields text deltas, tool calls and usage.

Every provider maps its SDK's errors onto the `LLMError` family so the fallback chain can decide,
without knowing the provider, whether the next model should be tried.
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

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
    """The model produced output the loop does not use piece by piece (tool-call arguments, reasoning).

    It tells the stream limits (limits.py) that the model is alive, and `chars` counts what is kept in
    memory (tool-call arguments; reasoning is not kept, so it counts 0). Consumers ignore it.
    """

    chars: int = 0


LLMChunk = Union[TextChunk, ToolCallChunk, UsageChunk, FinishChunk, ProgressChunk]


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

    def __init__(self, message: str, *, provider: str = "", model: str = "", status: int | None = None,
                 retry_after: float | None = None) -> None:
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


class LLM(abc.ABC):
    """One model at one provider."""

    provider: str = "llm"

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"

    @abc.abstractmethod
    def stream(self, messages: Sequence[HistoryMessage], tools: Sequence[ToolSchema] = ()) -> AsyncGenerator[LLMChunk, None]:
        """Stream one completion. Raises an `LLMError` subclass on failure."""

    async def aclose(self) -> None:
        return None
