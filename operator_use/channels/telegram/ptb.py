"""Everything that touches python-telegram-bot: building the Application, the polling watch, and the
translation of its errors into the ones the gateway understands. Imported only when the channel connects."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, ReplyParameters, Update
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, TelegramError
from telegram.error import RetryAfter as TgRetryAfter
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes, TypeHandler
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from ..base import ChannelError, FormattingRejected, NotModified, Refused, RetryAfter, TooLong
from .config import TelegramConfig

log = logging.getLogger(__name__)

__all__ = [
    "InputFile",
    "NetworkError",
    "TelegramError",
    "build_application",
    "inline_keyboard",
    "readable",
    "reply_parameters",
    "seconds",
    "shutdown",
    "translated_errors",
]


def seconds(obj: Any, attr: str) -> float | None:
    """A duration attribute in seconds (PTB 22 returns int or timedelta and warns about the change)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = getattr(obj, attr, None)
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class _WatchedRequest(HTTPXRequest):
    """The getUpdates connection, reporting each answered poll so the channel knows polling is back.

    It also hands the library only updates it can read. PTB parses a whole batch at once: one update it
    cannot parse (a message without `message_id` or `date`) fails the batch without moving the offset, so
    the same batch comes back at once, forever, and nobody gets an answer again. Such an update is
    replaced by an empty one with its id (logged, then ignored by the channel), so the offset moves past it.
    """

    def __init__(self, on_answer: Callable[[], None], **kw: Any) -> None:
        super().__init__(**kw)
        self._on_answer = on_answer

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(*args, **kwargs)
        if code == 200:  # not a 409 Conflict or a proxy's 502: those are failures the error callback sees
            self._on_answer()
        return code, payload

    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        data: dict[str, Any] = super().parse_json_payload(payload)
        result = data.get("result") if isinstance(data, dict) else None
        if isinstance(result, list):
            data["result"] = [u for u in map(readable, result) if u is not None]
        return data


def readable(raw: Any) -> dict[str, Any] | None:
    """`raw` when PTB can parse it; else an empty update with its id, or None without a usable id (polling and
    webhook alike)."""
    try:
        Update.de_json(raw, None)
        return raw
    except Exception as e:  # noqa: BLE001 — a platform library's own errors
        update_id = raw.get("update_id") if isinstance(raw, dict) else None
        # The reason only: the update itself may hold a private message.
        log.error("telegram: update %s could not be read and is skipped: %r", update_id, e)
        return {"update_id": update_id} if isinstance(update_id, int) else None


def build_application(
    config: TelegramConfig,
    token: str,
    *,
    on_update: Callable[[Update], Awaitable[None]],
    on_poll_answer: Callable[[], None],
) -> Application:
    async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await on_update(update)

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram: handling an update failed", exc_info=context.error)

    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(config.base_url)
        .base_file_url(config.base_file_url)
        .local_mode(config.local_mode)
        # Proactive throttling (30 msg/s, 20/min per group) and one wait-and-retry on 429 by the library;
        # a 429 that is still there reaches the gateway as RetryAfter.
        .rate_limiter(AIORateLimiter(max_retries=config.flood_retries))
        .get_updates_request(_WatchedRequest(on_poll_answer, connection_pool_size=1))
        .job_queue(None)
        # One update at a time keeps each chat's messages in order on the bus.
        .concurrent_updates(False)
        .build()
    )
    app.add_handler(TypeHandler(Update, handle))
    app.add_error_handler(on_error)
    return app


async def shutdown(app: Application) -> None:
    """Stop polling/webhook, then the application; each step only if it was reached."""
    try:
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
    finally:
        await app.shutdown()


def inline_keyboard(buttons: list[tuple[str, str, str | None]]) -> InlineKeyboardMarkup:
    """One row of callback buttons: (label, callback_data, style or None)."""
    row = [InlineKeyboardButton(label, callback_data=data, style=style) for label, data, style in buttons]
    return InlineKeyboardMarkup([row])


def reply_parameters(reply_to: str | None) -> ReplyParameters | None:
    if not reply_to or not reply_to.isdigit():
        return None
    # The user may have deleted the message meanwhile: answer anyway.
    return ReplyParameters(message_id=int(reply_to), allow_sending_without_reply=True)


# Telegram's answers to an edit of a message the user deleted, or one it will not let us change any more
# (PTB drops "Bad Request: " and lower-cases the rest: "Message_id_invalid").
_EDIT_TARGET_GONE = ("message to edit not found", "message can't be edited", "message_id_invalid")


@contextlib.contextmanager
def translated_errors(*, editing: bool = False) -> Iterator[None]:
    """PTB errors -> RetryAfter / NotModified / FormattingRejected / TooLong / Refused / ChannelError for the
    gateway. `editing`: the call edits an existing message."""
    try:
        yield
    except TgRetryAfter as e:
        raise RetryAfter(seconds(e, "retry_after") or 1.0) from None
    except BadRequest as e:
        text = e.message.lower()
        if "message is not modified" in text:
            raise NotModified(e.message) from None
        if editing and any(gone in text for gone in _EDIT_TARGET_GONE):
            # Only this message is lost to us: a stream goes on in a new message rather than being abandoned.
            raise Refused(f"the message to edit is gone ({e.message})") from None
        if "can't parse entities" in text or "can't find end" in text or "unsupported start tag" in text:
            raise FormattingRejected(e.message) from None
        if "message is too long" in text or "message_too_long" in text:  # sendMessage / editMessageText
            raise TooLong(f"telegram: {e.message}") from None
        raise ChannelError(f"telegram refused: {e.message}", permanent=True) from None
    except ChatMigrated as e:
        raise ChannelError(f"telegram: the group moved to chat {e.new_chat_id}", permanent=True) from None
    except Forbidden as e:
        raise ChannelError(f"telegram forbids it: {e.message}", permanent=True) from None
    except TelegramError as e:  # NetworkError, TimedOut...: transient
        raise ChannelError(f"telegram: {e.message}") from None
