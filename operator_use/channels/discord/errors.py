"""discord.py's errors as the gateway understands them.

Discord answers a message over its length with HTTP 400, JSON error code 50035 ("Invalid Form Body") and
`errors.content._errors[].code` BASE_TYPE_MAX_LENGTH: that is `TooLong`, and the gateway cuts smaller. A few
codes refuse only this one message, for what it says (AutoMod, the harmful links filter): `Refused`, so the
rest of the reply goes on and the user is told. Any other 4xx (missing access, unknown channel...) would fail
every message alike: a permanent `ChannelError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..base import ChannelError, Refused, RetryAfter, TooLong

INVALID_FORM_BODY = 50035
# JSON error codes (discord.com/developers/docs/topics/opcodes-and-status-codes) that concern the content of
# this one message, with words for the user.
REFUSALS = {
    200000: "blocked by the server's AutoMod",
    240000: "blocked by Discord's harmful links filter",
    20009: "explicit content Discord will not deliver here",
    50006: "Discord took it for an empty message",
}


@contextlib.contextmanager
def platform_errors(what: str) -> Iterator[None]:
    """discord.py errors as the gateway's: rate limits -> RetryAfter, over-long content -> TooLong, a refusal
    of this message -> Refused, other 4xx -> permanent ChannelError."""
    import aiohttp
    import discord

    try:
        yield
    except discord.RateLimited as exc:  # the library would have waited longer than max_ratelimit_wait
        raise RetryAfter(exc.retry_after, f"discord {what}: rate limited") from exc
    except discord.HTTPException as exc:
        if exc.status == 429:  # retries used up, or a 429 the library does not trust (no Via header)
            raise RetryAfter(_retry_after(exc), f"discord {what}: rate limited") from exc
        if exc.code == INVALID_FORM_BODY and _content_too_long(exc):
            raise TooLong(f"discord {what}: {exc.text}") from exc
        if 400 <= exc.status < 500 and exc.code in REFUSALS:
            raise Refused(REFUSALS[exc.code]) from exc
        raise ChannelError(
            f"discord {what} failed: {exc.status} {exc.text}", permanent=400 <= exc.status < 500
        ) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise ChannelError(f"discord {what} failed: {exc!r}") from exc


def _content_too_long(exc: Any) -> bool:
    """Whether a 50035 names the message content as over its maximum length."""
    errors = getattr(exc, "_errors", None)  # discord.py keeps the raw `errors` object there
    content = errors.get("content") if isinstance(errors, dict) else None
    found = content.get("_errors") if isinstance(content, dict) else None
    if isinstance(found, list):
        return any(isinstance(e, dict) and e.get("code") == "BASE_TYPE_MAX_LENGTH" for e in found)
    # Without the raw object: discord.py's flattened text, "In content: Must be 2000 or fewer in length."
    return "In content: Must be" in (exc.text or "") and "or fewer in length" in (exc.text or "")


def _retry_after(exc: Any) -> float:
    try:
        return float(exc.response.headers.get("Retry-After", 1.0))
    except (AttributeError, TypeError, ValueError):
        return 1.0
