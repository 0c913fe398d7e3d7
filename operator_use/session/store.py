"""Conversation history as one append-only JSONL file per conversation key.

Appending (never rewriting) means a crash can at worst tear the last line; a torn or corrupt line is
skipped with a warning when the file is loaded, never fatal. A write that fails (disk full, I/O error)
is cut back off the file, so the next turn never lands glued to half a line. File I/O runs in worker
threads.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from ..messages import HistoryAdapter, HistoryMessage, scrub_deep

log = logging.getLogger(__name__)


@dataclass
class Session:
    key: str
    messages: list[HistoryMessage] = field(default_factory=list)
    # The file does not end with a newline (torn write): the next append starts a fresh line.
    needs_newline: bool = False
    # Which incarnation of the key this is: /new (archive) starts the next one, and appends bound to an
    # older one are dropped instead of leaking into the fresh conversation.
    generation: int = 0


@dataclass(frozen=True)
class SessionInfo:
    key: str
    messages: int
    updated_at: float
    path: Path


class SessionWriteError(Exception):
    """History could not be written (disk full, I/O error). The file was left as it was before the write;
    the message is meant for the user."""


class _Torn(SessionWriteError):
    """The failed write stayed in the file, partly: the next append must start on a fresh line."""


# File names stay far below the usual 255-byte limit, with room for the archive's timestamp suffix.
_MAX_STEM = 200
_DIGEST_CHARS = 32
# quote() always escapes "+", so a "+" marks a shortened name and never occurs in a plain one: the two
# kinds cannot collide.
_SHORTENED = "+"
_SUFFIX = ".jsonl"
_KEY_SUFFIX = ".key"
# Every line starts like this (the role is the first field of every history model); inside a JSON string
# the quotes would be escaped, so it also marks where a line glued onto a torn one begins.
_LINE_START = b'{"role":"'


def _key_bytes(key: str) -> bytes:
    # surrogatepass: a key is any str (lone surrogates included) and must still map to a name, one-to-one.
    return key.encode("utf-8", "surrogatepass")


def _stem(key: str) -> str:
    """The file name of `key` without its suffix: the percent-encoded key ("telegram:123:7" ->
    "telegram%3A123%3A7"), or, when that is too long for a file name, its start plus a digest of the whole
    key (the real key then lives in a `.key` file beside it)."""
    quoted = quote(_key_bytes(key), safe="")
    if len(quoted) <= _MAX_STEM:
        return quoted
    digest = hashlib.sha256(_key_bytes(key)).hexdigest()[:_DIGEST_CHARS]
    head = quoted[: _MAX_STEM - _DIGEST_CHARS - 1]
    cut = head.find("%", len(head) - 2)  # keep the readable part free of half an escape
    return (head[:cut] if cut != -1 else head) + _SHORTENED + digest


def _filename(key: str) -> str:
    return _stem(key) + _SUFFIX


def _key_of(path: Path) -> str:
    stem = path.name[: -len(_SUFFIX)]
    if _SHORTENED not in stem:
        return unquote(stem, errors="surrogatepass")
    try:
        return path.with_name(stem + _KEY_SUFFIX).read_bytes().decode("utf-8", "surrogatepass")
    except (OSError, UnicodeDecodeError):
        log.warning("no readable key file beside %s; listing it by its file name", path)
        return stem


def _parse_line(line: bytes) -> HistoryMessage:
    try:
        return HistoryAdapter.validate_json(line)
    except (ValidationError, ValueError):
        # A line written after a torn one, by a version that did not cut failed writes back: the later
        # message starts where the next line start is.
        start = line.find(_LINE_START, 1)
        while start != -1:
            try:
                message = HistoryAdapter.validate_json(line[start:])
            except (ValidationError, ValueError):
                start = line.find(_LINE_START, start + 1)
            else:
                log.warning("recovered a message glued onto a torn line")
                return message
        raise


def _parse(path: Path) -> tuple[list[HistoryMessage], bool]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], False
    messages: list[HistoryMessage] = []
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            messages.append(_parse_line(line))
        except (ValidationError, ValueError) as exc:
            where = "last line (torn write?)" if number >= len(lines) - 1 else f"line {number}"
            log.warning("skipping unreadable %s of %s: %s", where, path, str(exc).splitlines()[0])
    return messages, bool(raw) and not raw.endswith(b"\n")


def _encode(messages: list[HistoryMessage]) -> tuple[bytes, list[HistoryMessage]]:
    """The JSONL lines for `messages`, and the messages exactly as written."""
    lines, written = [], []
    for m in messages:
        try:
            line = m.model_dump_json(exclude_none=True)
        except PydanticSerializationError:
            # Lone surrogates (a tool result with an undecodable file name, a client sending broken
            # UTF-16) have no UTF-8 form: they are saved as U+FFFD, and the session keeps the same text.
            m = type(m).model_validate(scrub_deep(m.model_dump()))
            line = m.model_dump_json(exclude_none=True)
        lines.append(line.encode() + b"\n")
        written.append(m)
    return b"".join(lines), written


def _write_key_file(path: Path, key: str) -> None:
    key_file = path.with_name(path.name[: -len(_SUFFIX)] + _KEY_SUFFIX)
    if key_file.exists():
        return
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
    tmp.write_bytes(_key_bytes(key))
    os.replace(tmp, key_file)


def _append(path: Path, payload: bytes, fsync: bool, key: str) -> None:
    """Append `payload` to `path` whole, or raise SessionWriteError with the file as it was before (or
    `_Torn` when even cutting the partial write back failed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if _SHORTENED in path.name:
            _write_key_file(path, key)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SessionWriteError(_write_failure(exc)) from exc
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        except OSError as exc:
            log.error("could not append to %s: %s", path, exc)
            try:
                os.ftruncate(fd, start)
            except OSError as cut:
                log.error("could not cut the failed write off %s: %s", path, cut)
                raise _Torn(_write_failure(exc)) from exc
            raise SessionWriteError(_write_failure(exc)) from exc
    finally:
        os.close(fd)


def _write_failure(exc: OSError) -> str:
    reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc)).lower()
    return f"This conversation could not be saved ({reason}), so this exchange will be forgotten."


class SessionStore:
    def __init__(self, root: Path, *, cache_size: int = 256, fsync: bool = False) -> None:
        self.root = Path(root)
        self.sessions_dir = self.root / "sessions"
        self.archive_dir = self.root / "sessions" / "archive"
        self.fsync = fsync
        self._cache: OrderedDict[str, Session] = OrderedDict()
        self._cache_size = cache_size
        self._locks: dict[str, asyncio.Lock] = {}
        self._generations: dict[str, int] = {}
        # Called with the key after every `archive` (/new), moved or not: the web page clears its view.
        self.archive_listeners: list[Callable[[str], Awaitable[None]]] = []

    def path_for(self, key: str) -> Path:
        """The history file of `key`: always a single, valid file name inside `sessions_dir`."""
        return self.sessions_dir / _filename(key)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def load(self, key: str) -> Session:
        session = self._cache.get(key)
        if session is not None:
            self._cache.move_to_end(key)
            return session
        async with self._lock(key):
            session = self._cache.get(key)
            if session is None:
                messages, torn = await asyncio.to_thread(_parse, self.path_for(key))
                session = Session(key, messages, needs_newline=torn, generation=self._generations.get(key, 0))
                self._remember(session)
        return session

    def _remember(self, session: Session) -> None:
        self._cache[session.key] = session
        self._cache.move_to_end(session.key)
        while len(self._cache) > self._cache_size:
            old, _ = self._cache.popitem(last=False)
            lock = self._locks.get(old)
            if lock is not None and not lock.locked():  # a held lock keeps serializing its writers
                del self._locks[old]

    async def append(self, key: str, messages: list[HistoryMessage], *, session: Session | None = None) -> None:
        """Append to `key`'s history. With `session`, only while that session is still the current one."""
        if not messages:
            return
        session = session or await self.load(key)
        lines, messages = _encode(messages)
        async with self._lock(key):
            if session.generation != self._generations.get(key, 0):
                log.info("dropping %d message(s) of archived conversation %s", len(messages), key)
                return
            if session.needs_newline:
                lines = b"\n" + lines
            try:
                await asyncio.to_thread(_append, self.path_for(key), lines, self.fsync, key)
            except _Torn:
                session.needs_newline = True
                cached = self._cache.get(key)
                if cached is not None:
                    cached.needs_newline = True
                raise
            session.needs_newline = False
            session.messages.extend(messages)
            cached = self._cache.get(key)
            if cached is not None and cached is not session:
                # `session` was evicted while its turn ran and the key reloaded meanwhile: keep the copy
                # the next turn will read complete.
                cached.messages.extend(messages)
                cached.needs_newline = False

    async def archive(self, key: str) -> Path | None:
        """Move the conversation aside (for /new); the next message starts a fresh history."""
        async with self._lock(key):
            self._cache.pop(key, None)
            self._generations[key] = self._generations.get(key, 0) + 1
            src = self.path_for(key)
            stamp = f"{time.strftime('%Y%m%d-%H%M%S')}.{time.time_ns() % 10**6:06d}"
            dst = self.archive_dir / f"{_stem(key)}.{stamp}{_SUFFIX}"

            def move() -> bool:
                if not src.exists():
                    return False
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                return True

            moved = await asyncio.to_thread(move)
        for listener in list(self.archive_listeners):
            try:
                await listener(key)
            except Exception:  # a listener's failure must not undo /new
                log.exception("archive listener %r failed for %s", listener, key)
        return dst if moved else None

    def list_sessions(self) -> list[SessionInfo]:
        """Synchronous: used by the CLI, outside the event loop."""
        if not self.sessions_dir.exists():
            return []
        out = []
        for path in sorted(self.sessions_dir.glob("*" + _SUFFIX)):
            with open(path, "rb") as f:
                count = sum(1 for line in f if line.strip())
            out.append(SessionInfo(_key_of(path), count, path.stat().st_mtime, path))
        return sorted(out, key=lambda s: s.updated_at, reverse=True)

    def read_sync(self, key: str) -> list[HistoryMessage]:
        return _parse(self.path_for(key))[0]


def history_to_text(messages: list[HistoryMessage]) -> str:
    """A readable transcript for `operator-use sessions show`."""
    out = []
    for m in messages:
        if m.role == "human":
            out.append(f"you: {m.content}")
        elif m.role == "ai":
            if m.content:
                out.append(f"agent: {m.content}")
            for call in m.tool_calls:
                out.append(f"  -> {call.name}({json.dumps(call.arguments, ensure_ascii=False)[:200]})")
        elif m.role == "tool":
            out.append(f"  <- {m.name}: {m.content[:200]}")
    return "\n".join(out)
