"""Keep secrets out of logs and tool outputs.

The secret values are every `SecretStr` in the configuration (API keys, channel tokens...) plus the
values of environment variables whose names look like credentials (a provider key picked up from
`OPENAI_API_KEY` never passes through the config). `install_log_redaction` wraps the log record
factory, so every record, whichever logger or handler it goes to (file, stderr, pytest's caplog), has
its message, arguments and traceback scrubbed before anything formats it.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

MASK = "[REDACTED]"
MIN_SECRET_LEN = 6  # shorter values would mask ordinary words


def _walk(value: Any) -> Iterable[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name, None))
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _walk(v)


def secret_values(config: BaseModel | None = None, environ: Mapping[str, str] | None = None) -> set[str]:
    from ..tools.shell import _looks_secret

    found = set(_walk(config)) if config is not None else set()
    env = os.environ if environ is None else environ
    found |= {v for k, v in env.items() if _looks_secret(k, v) and not k.upper().startswith("OPERATOR_")}
    # OPERATOR_* variables are configuration; only the secret ones among them came in through `config`.
    return {s for s in found if s and len(s) >= MIN_SECRET_LEN}


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self.values |= {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(self.values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)


_redactor = Redactor()
_installed = False


def _scrub(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # a bad format string: let logging report it as usual
        return record
    clean = _redactor(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        clean_exc = _redactor(text)
        if clean_exc != text:
            # Formatters print exc_text when set; dropping exc_info keeps the raw exception from any handler.
            record.exc_text, record.exc_info = clean_exc, None
    if record.stack_info:
        record.stack_info = _redactor(record.stack_info)
    return record


def install_log_redaction(secrets: Iterable[str]) -> Redactor:
    """Scrub these values from every log record from now on (later calls add to the set)."""
    global _installed
    _redactor.add(secrets)
    if not _installed:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return _scrub(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True
    return _redactor


def log_redactor() -> Redactor:
    return _redactor


# scheme://user:password@host — the userinfo part of any URL in a text (greedy up to the authority's end,
# so a password with an unencoded "@" is masked whole).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#@]*(?:@[^/\s?#@]*)*@")


# ?key=... / &api_key=... / ?access_token=...: a query parameter whose name says it holds a credential.
_URL_SECRET_PARAM = re.compile(r"(?i)([?&;][^=&;\s#?]*(?:key|token|secret|password)[^=&;\s#?]*=)[^&;\s#]*")


def strip_url_credentials(text: str) -> str:
    """`text` with the `user:password@` of every URL in it shown as `***@`, and the value of every query
    parameter whose name contains key, token, secret or password shown as `***`."""
    if "@" in text:
        text = _URL_USERINFO.sub(r"\1***@", text)
    if "=" in text:
        text = _URL_SECRET_PARAM.sub(r"\1***", text)
    return text


def strip_url_credentials_in(data: Any) -> Any:
    """The same for every string in a JSON-like structure (dicts and lists walked, a new structure returned)."""
    if isinstance(data, str):
        return strip_url_credentials(data)
    if isinstance(data, Mapping):
        return {k: strip_url_credentials_in(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strip_url_credentials_in(v) for v in data]
    return data
