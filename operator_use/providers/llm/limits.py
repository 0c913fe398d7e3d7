"""Limits on one streamed LLM call: a total deadline, an idle timeout between outputs, an output cap.

SDK read timeouts only notice a silent socket. A server that keeps the stream alive with SSE comments or
pings but never sends a token, or one that streams forever, would otherwise hold the turn (and its
concurrency slot) until /stop. The limits are enforced once here, around any provider's `stream`:
only chunks count as progress (pings, keep-alive comments and empty deltas never become chunks), and
when a limit hits, the provider's stream is closed, which closes its HTTP response. `StreamCutOff` (base.py)
is re-exported here: it is what every limit raises. A retryable provider error (a read timeout, a 5xx or an
overload sent mid-stream, a dropped connection) after text was shown becomes a `BrokenOff` cut-off too: the
user saw that text, so it must stay in the reply and the history instead of turning into "unavailable".

Each model of a fallback chain gets its own limits (`with_limits`), so a model that goes quiet before its
first output falls back to the next one; once output was produced, the cut-off ends the reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from ...messages import HistoryMessage
from ._errors import DROPPED_MESSAGE
from .base import (
    LLM,
    ConnectionError_,
    LLMChunk,
    LLMError,
    OverloadedError,
    ProgressChunk,
    RateLimitError,
    StreamCutOff,
    TextChunk,
    TimeoutError_,
    ToolSchema,
)
from .fallback import FallbackLLM


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """None turns a limit off."""

    # Seconds one model may take for one call, from the request to the last chunk.
    call_deadline: float | None = 600.0
    # Seconds without a chunk (text, tool-call arguments, a new tool call, reasoning), the first one included.
    idle_timeout: float | None = 120.0
    # Characters of text and tool calls (arguments, names, ids and `TOOL_CALL_OVERHEAD_CHARS` each) per call.
    max_output_chars: int | None = 100_000
    # Tool calls one reply may ask for.
    max_tool_calls: int | None = 64


class IdleTimeout(StreamCutOff):
    # Before any output, another model may well answer; after it, the fallback chain re-raises anyway.
    retryable = True


class DeadlineExceeded(StreamCutOff):
    """Not retryable: the time the user was promised is spent, starting over would double it."""


class OutputLimitExceeded(StreamCutOff):
    pass


class TooManyToolCalls(StreamCutOff):
    pass


class BrokenOff(StreamCutOff):
    """A retryable provider error after text was shown. Retryable like the error it wraps, so the fallback
    chain counts it against the model's circuit breaker; text having been streamed, the chain re-raises it."""

    retryable = True


# The note after the text already shown, by the kind of error that ended the reply.
_BROKEN_OFF_MESSAGES: tuple[tuple[type[LLMError], str], ...] = (
    (TimeoutError_, "The model stopped responding; the reply was cut off."),
    (ConnectionError_, DROPPED_MESSAGE),
    (OverloadedError, "The model became overloaded; the reply was cut off."),
    (RateLimitError, "The model hit a rate limit; the reply was cut off."),
)
_BROKEN_OFF_MESSAGE = "The model failed part-way; the reply was cut off."


def _broken_off(exc: LLMError) -> BrokenOff:
    note = next((text for kind, text in _BROKEN_OFF_MESSAGES if isinstance(exc, kind)), _BROKEN_OFF_MESSAGE)
    return BrokenOff(
        f"{exc} (after text was shown; the reply was cut off)",
        user_message=note,
        provider=exc.provider,
        model=exc.model,
    )


def _seconds(value: float) -> str:
    return f"{value:g} s"


async def limit_stream(
    stream: AsyncIterator[LLMChunk], limits: StreamLimits, *, provider: str = "", model: str = ""
) -> AsyncGenerator[LLMChunk, None]:
    """Yield `stream`'s chunks (without `ProgressChunk`s) until it ends or a limit raises a `StreamCutOff`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.call_deadline if limits.call_deadline is not None else None
    cap = limits.max_output_chars
    produced = 0  # characters counted against the cap
    calls = 0  # tool calls started
    started = False  # any chunk received
    shown = False  # text went out to the user
    try:
        while True:
            now = loop.time()
            if deadline is not None and now >= deadline:
                raise _deadline_exceeded(limits, started, provider, model)
            idle_at = now + limits.idle_timeout if limits.idle_timeout is not None else None
            when = min((t for t in (idle_at, deadline) if t is not None), default=None)
            timer = asyncio.timeout_at(when)
            try:
                async with timer:
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except StreamCutOff:
                raise
            except LLMError as exc:
                if shown and exc.retryable:
                    raise _broken_off(exc) from exc
                raise
            except TimeoutError:
                if not timer.expired():
                    raise  # raised by the stream itself, not by our timer
                if deadline is not None and when == deadline:
                    raise _deadline_exceeded(limits, started, provider, model) from None
                raise _idle(limits, started, provider, model) from None
            started = True
            size = (
                chunk.chars
                if isinstance(chunk, ProgressChunk)
                else len(chunk.text)
                if isinstance(chunk, TextChunk)
                else 0
            )
            if cap is not None and produced + size > cap:
                if isinstance(chunk, TextChunk) and cap > produced:
                    yield TextChunk(chunk.text[: cap - produced])
                raise OutputLimitExceeded(
                    f"{provider}/{model}: output passed {cap} characters (llm.max_output_chars)",
                    user_message=f"The reply grew past {cap:,} characters and was cut off.",
                    provider=provider,
                    model=model,
                )
            produced += size
            if isinstance(chunk, ProgressChunk) and chunk.calls:
                calls += chunk.calls
                if limits.max_tool_calls is not None and calls > limits.max_tool_calls:
                    raise TooManyToolCalls(
                        f"{provider}/{model}: more than {limits.max_tool_calls} tool calls in one reply "
                        "(llm.max_tool_calls)",
                        user_message=f"The reply asked for more than {limits.max_tool_calls} tool calls at once "
                        "and was cut off.",
                        provider=provider,
                        model=model,
                    )
            if not isinstance(chunk, ProgressChunk):
                if isinstance(chunk, TextChunk) and chunk.text:
                    shown = True
                yield chunk
    finally:
        # Closing the provider's generator closes its HTTP response: no connection is left streaming.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _idle(limits: StreamLimits, started: bool, provider: str, model: str) -> IdleTimeout:
    assert limits.idle_timeout is not None
    wait = _seconds(limits.idle_timeout)
    if started:
        return IdleTimeout(
            f"{provider}/{model}: no output for {wait} (llm.idle_timeout)",
            user_message=f"The model stopped sending for {wait}; the reply was cut off.",
            provider=provider,
            model=model,
        )
    return IdleTimeout(
        f"{provider}/{model}: no output within {wait} (llm.idle_timeout)",
        user_message=f"The model sent nothing for {wait}, so I stopped waiting. Please try again.",
        provider=provider,
        model=model,
    )


def _deadline_exceeded(limits: StreamLimits, started: bool, provider: str, model: str) -> DeadlineExceeded:
    assert limits.call_deadline is not None
    wait = _seconds(limits.call_deadline)
    return DeadlineExceeded(
        f"{provider}/{model}: call took longer than {wait} (llm.call_deadline)",
        user_message=f"The reply took longer than {wait} and was cut off."
        if started
        else f"The model did not answer within {wait}. Please try again.",
        provider=provider,
        model=model,
    )


class LimitedLLM(LLM):
    """One model with `StreamLimits` on each call."""

    def __init__(self, inner: LLM, limits: StreamLimits) -> None:
        super().__init__(inner.model)
        self.inner = inner
        self.limits = limits
        self.provider = inner.provider

    @property
    def label(self) -> str:
        return self.inner.label

    @property
    def last_model(self) -> str | None:
        return getattr(self.inner, "last_model", None)

    def stream(
        self, messages: Sequence[HistoryMessage], tools: Sequence[ToolSchema] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        return limit_stream(
            self.inner.stream(messages, tools), self.limits, provider=self.inner.provider, model=self.inner.model
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def with_limits(llm: LLM, limits: StreamLimits) -> LLM:
    """`llm` with `limits` on every call; in a fallback chain, on each of its models (the chain is changed
    in place). An LLM that already has limits keeps them."""
    if isinstance(llm, LimitedLLM):
        return llm
    if isinstance(llm, FallbackLLM):
        llm.llms = [with_limits(m, limits) for m in llm.llms]
        return llm
    return LimitedLLM(llm, limits)
