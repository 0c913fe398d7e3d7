"""HTTP status / error-type -> `LLMError` mapping shared by the SDK-backed providers.

Kept SDK-free so that importing it never pulls in `openai` or `anthropic`.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

from .base import (
    AuthError,
    BadRequestError,
    ConnectionDropped,
    ConnectionError_,
    LLMError,
    OverloadedError,
    RateLimitError,
    ServerError,
    TimeoutError_,
)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to `retry-after-ms` / `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            return value if math.isfinite(value) and value >= 0 else None
        except ValueError:
            pass
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        # Plain dicts are case-sensitive; SDK header objects are not.
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def error_message(body: Any, fallback: str) -> str:
    """The API's own message when the body has one (`{"error": {"message"}}` or `{"message"}`)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
    return fallback


def error_type(body: Any) -> str:
    """`error.type` (Anthropic) or `type`/`code` (OpenAI-compatible), lower-cased."""
    if not isinstance(body, Mapping):
        return ""
    inner = body.get("error", body)
    if not isinstance(inner, Mapping):
        return ""
    parts = [inner.get("type"), inner.get("code")]
    return " ".join(str(p) for p in parts if p).lower()


def error_from_status(
    status: int | None,
    message: str,
    *,
    kind: str = "",
    headers: Mapping[str, str] | None = None,
    provider: str = "",
    model: str = "",
) -> LLMError:
    """Pick the `LLMError` subclass from the HTTP status and the provider's error type string.

    The type string matters for errors sent inside a 200 stream, where the status says nothing.
    """
    kind = kind.lower()
    text = f"{kind} {message}".lower()
    kw: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status": status,
        "retry_after": parse_retry_after(headers),
    }
    label = f"{provider}/{model}: " if provider or model else ""
    msg = f"{label}{message}"
    if (
        status in (401, 403)
        or "authentication_error" in kind
        or "permission_error" in kind
        or "invalid_api_key" in kind
    ):
        return AuthError(msg, **kw)
    if status == 402:
        # Out of credits is an account problem: falling back would silently hide it.
        return AuthError(msg, **kw)
    if status in (503, 529) or "overloaded" in text:
        return OverloadedError(msg, **kw)
    if status == 429 or "rate_limit" in kind:
        return RateLimitError(msg, **kw)
    if status == 408 or "timeout" in kind:
        return TimeoutError_(msg, **kw)
    if status is not None and 400 <= status < 500:
        return BadRequestError(msg, **kw)
    if "invalid_request" in kind or "not_found" in kind:
        return BadRequestError(msg, **kw)
    # 5xx, or an unknown error mid-stream: the provider failed, another model may not.
    return ServerError(msg, **kw)


def transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeout, other transport) exception classes of the HTTP libraries the SDKs may use.

    The SDKs wrap these when opening a request, but not always while a stream is being read.
    """
    timeouts: list[type[BaseException]] = []
    others: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            lib = __import__(name)
        except ImportError:
            continue
        timeouts.append(lib.TimeoutException)
        others.append(lib.TransportError)
    return tuple(timeouts), tuple(others)


def timeout_error(provider: str, model: str, detail: str = "request timed out") -> LLMError:
    return TimeoutError_(f"{provider}/{model}: {detail}", provider=provider, model=model)


def connection_error(provider: str, model: str, detail: str = "connection error") -> LLMError:
    return ConnectionError_(f"{provider}/{model}: {detail}", provider=provider, model=model)


DROPPED_MESSAGE = "The connection to the model dropped; the reply was cut off."


def stream_dropped(provider: str, model: str, detail: str, *, shown: bool) -> LLMError:
    """The stream ended or broke before the model's finish. Until text was `shown` to the user, another model
    may still answer (and no half-streamed tool call ever runs); after it, only the cut-off reply is left."""
    if not shown:
        return connection_error(provider, model, detail)
    return ConnectionDropped(
        f"{provider}/{model}: {detail}; the reply was cut off",
        user_message=DROPPED_MESSAGE,
        provider=provider,
        model=model,
    )
