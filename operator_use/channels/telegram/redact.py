"""Keep the bot token out of the logs.

The Bot API puts the token in every URL (`/bot<token>/sendMessage`), and httpx logs each request URL at
INFO; python-telegram-bot logs its base URLs at DEBUG. httpx is quieted to WARNING (unless configured),
and every record of the loggers that can carry a URL has the token replaced, tracebacks included.
"""

from __future__ import annotations

import logging

# The loggers that format URLs (a filter only sees records created by its own logger, not its children's).
LOGGERS = ("httpx", "httpcore", "telegram", "telegram.Bot", "telegram.ext.ExtBot", "telegram.ext.Updater",
           "telegram.ext.Application", "telegram.ext.AIORateLimiter", "telegram.request.BaseRequest",
           "telegram.request.HTTPXRequest", "telegram.ext", "operator_use.channels.telegram",
           "operator_use.channels.telegram.channel", "operator_use.channels.telegram.ptb",
           "operator_use.channels.telegram.inbound", "operator_use.gateway.gateway",
           "operator_use.gateway.stream_editor")
MASK = "<telegram-token>"


class TokenFilter(logging.Filter):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the handler's problem, not ours
            return True
        if self.token in message:
            record.msg, record.args = message.replace(self.token, MASK), None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if self.token in text:
                record.exc_text = text.replace(self.token, MASK)
        return True


def install(token: str) -> TokenFilter:
    httpx_logger = logging.getLogger("httpx")
    if httpx_logger.level == logging.NOTSET:
        httpx_logger.setLevel(logging.WARNING)
    token_filter = TokenFilter(token)
    for name in LOGGERS:
        logging.getLogger(name).addFilter(token_filter)
    return token_filter


def uninstall(token_filter: TokenFilter) -> None:
    for name in LOGGERS:
        logging.getLogger(name).removeFilter(token_filter)
