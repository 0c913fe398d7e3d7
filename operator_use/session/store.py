"""Conversation history as one append-only JSONL file per conversation key.

Appending (never rewriting) means a crash can at worst tear the last line; a torn or corrupt line is
skipped with a warning when the file is loaded, never fatal. File I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from pydantic import ValidationError

from ..messages import HistoryAdapter, HistoryMessage

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


def _filename(key: str) -> str:
    # Reversible and safe on every filesystem: "telegram:123:7" -> "telegram%3A123%3A7.jsonl"
    return quote(key, safe="") + ".jsonl"


def _parse(path: Path) -> tuple[list[HistoryMessage], bool]:
    if not path.exists():
        return [], False
    raw = path.read_bytes()
    messages: list[HistoryMessage] = []
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            messages.append(HistoryAdapter.validate_json(line))
        except (ValidationError, ValueError) as exc:
            where = "last line (torn write?)" if number >= len(lines) - 1 else f"line {number}"
            log.warning("skipping unreadable %s of %s: %s", where, path, str(exc).splitlines()[0])
    return messages, bool(raw) and not raw.endswith(b"\n")


def _append(path: Path, payload: bytes, fsync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(payload)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


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

    def path_for(self, key: str) -> Path:
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
        lines = b"".join(m.model_dump_json(exclude_none=True).encode() + b"\n" for m in messages)
        async with self._lock(key):
            if session.generation != self._generations.get(key, 0):
                log.info("dropping %d message(s) of archived conversation %s", len(messages), key)
                return
            if session.needs_newline:
                lines = b"\n" + lines
            await asyncio.to_thread(_append, self.path_for(key), lines, self.fsync)
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
            dst = self.archive_dir / f"{quote(key, safe='')}.{time.strftime('%Y%m%d-%H%M%S')}.{time.time_ns() % 10**6}.jsonl"

            def move() -> bool:
                if not src.exists():
                    return False
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                return True

            moved = await asyncio.to_thread(move)
        return dst if moved else None

    def list_sessions(self) -> list[SessionInfo]:
        """Synchronous: used by the CLI, outside the event loop."""
        if not self.sessions_dir.exists():
            return []
        out = []
        for path in sorted(self.sessions_dir.glob("*.jsonl")):
            with open(path, "rb") as f:
                count = sum(1 for line in f if line.strip())
            out.append(SessionInfo(unquote(path.name[: -len(".jsonl")]), count, path.stat().st_mtime, path))
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
