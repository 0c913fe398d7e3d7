"""discord.py's errors as the gateway understands them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..base import ChannelError, RetryAfter


@contextlib.contextmanager
def platform_errors(what: str) -> Iterator[None]:
    """discord.py errors as the gateway's: rate limits -> RetryAfter, 4xx -> permanent ChannelError."""
    import aiohttp
    import discord

    try:
        yield
    except discord.RateLimited as exc:  # the library would have waited longer than max_ratelimit_wait
        raise RetryAfter(exc.retry_after, f"discord {what}: rate limited") from exc
    except discord.HTTPException as exc:
        if exc.status == 429:  # retries used up, or a 429 the library does not trust (no Via header)
            raise RetryAfter(_retry_after(exc), f"discord {what}: rate limited") from exc
        raise ChannelError(f"discord {what} failed: {exc.status} {exc.text}",
                           permanent=400 <= exc.status < 500) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise ChannelError(f"discord {what} failed: {exc!r}") from exc


def _retry_after(exc: Any) -> float:
    try:
        return float(exc.response.headers.get("Retry-After", 1.0))
    except (AttributeError, TypeError, ValueError):
        return 1.0
