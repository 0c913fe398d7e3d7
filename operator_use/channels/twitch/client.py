"""What the Twitch channel changes in twitchio 3 (imported only once the channel connects).

- `TwitchClient`: token files disabled (`.tio.tokens.json` is neither read nor written: tokens come from
  the configuration), and every EventSub socket remembered. After a `session_reconnect` twitchio files the
  new socket under the session id it shares with the old one, then removes that id when the old socket
  closes: it forgets a live socket, which `Client.close()` would then leave open.
- `rate_limit_trace`/`RATE_RESET`: a Helix 429's `Ratelimit-Reset` header (twitchio's HTTPException
  keeps only the body), captured per request through the calling task's context.
- `Redact`: twitchio's log lines and errors quote request URLs, and the token endpoints carry the client
  secret and refresh token in their query string; `reason` describes an error without them.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import aiohttp
import twitchio

RATE_RESET: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("twitch_reset", default=None)


class _SocketBook(dict[str, dict[str, Any]]):
    """twitchio's `_websockets` map (token user -> session id -> socket), remembering every socket filed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def __missing__(self, key: str) -> dict[str, Any]:
        self[key] = {}
        return dict.__getitem__(self, key)

    def __setitem__(self, key: str, sockets: dict[str, Any]) -> None:
        filed = _Filed(self)
        for session_id, socket in sockets.items():
            filed[session_id] = socket
        super().__setitem__(key, filed)

    def note(self, socket: Any) -> None:
        self.seen = [s for s in self.seen if s is not socket and not getattr(s, "_closed", False)]
        self.seen.append(socket)


class _Filed(dict[str, Any]):
    def __init__(self, book: _SocketBook) -> None:
        super().__init__()
        self._book = book

    def __setitem__(self, session_id: str, socket: Any) -> None:
        self._book.note(socket)
        super().__setitem__(session_id, socket)


class TwitchClient(twitchio.Client):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._book = _SocketBook()
        self._websockets = self._book

    def sockets(self) -> list[Any]:
        """Every EventSub socket not closed for good, including the ones twitchio lost track of."""
        return list(self._book.seen)

    async def load_tokens(self, path: str | None = None, /) -> None:
        return None

    async def save_tokens(self, path: str | None = None, /) -> None:
        return None


def rate_limit_trace() -> aiohttp.TraceConfig:
    async def on_end(session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        box = RATE_RESET.get()
        if box is not None and params.response.status == 429:
            box["reset"] = params.response.headers.get("Ratelimit-Reset", "")

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return trace


def seconds_until(reset: str | None) -> float:
    """Seconds to wait for a `Ratelimit-Reset` (Unix seconds) header; one second when there is none."""
    try:
        return min(60.0, max(0.25, float(reset or "") - time.time()))
    except ValueError:
        return 1.0


def reason(e: BaseException) -> str:
    status = getattr(e, "status", None)
    extra = getattr(e, "extra", None)
    message = extra.get("message") if isinstance(extra, dict) else None
    if status is not None:
        return f"HTTP {status}" + (f" ({message})" if message else "")
    return type(e).__name__ if isinstance(e, twitchio.TwitchioException) else str(e)


class QuietStarletteAdvice(logging.Filter):
    """Drops twitchio's advice to install starlette, logged on every start: we never use that adapter."""

    def __init__(self) -> None:
        super().__init__()
        self._loggers: list[logging.Logger] = []

    def attach(self) -> None:
        names = {n for n in logging.root.manager.loggerDict if n.split(".")[0] == "twitchio"}
        self._loggers = [logging.getLogger(n) for n in sorted(names)]
        for logger in self._loggers:
            logger.addFilter(self)

    def detach(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self)
        self._loggers = []

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return "StarletteAdapter" not in record.getMessage()
        except (TypeError, ValueError, KeyError):
            return True  # a malformed record: logging reports it as usual
