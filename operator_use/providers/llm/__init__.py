"""LLM providers behind one streaming contract (see base.py)."""

from .base import (
    LLM,
    AuthError,
    BadRequestError,
    FinishChunk,
    LLMChunk,
    LLMError,
    OverloadedError,
    RateLimitError,
    ServerError,
    TextChunk,
    ToolCallChunk,
    ToolSchema,
    UsageChunk,
)

__all__ = [
    "LLM",
    "AuthError",
    "BadRequestError",
    "FinishChunk",
    "LLMChunk",
    "LLMError",
    "OverloadedError",
    "RateLimitError",
    "ServerError",
    "TextChunk",
    "ToolCallChunk",
    "ToolSchema",
    "UsageChunk",
]
