"""A small JSON document on disk that two processes may change: the agent and the `operator-use` CLI.

- Writes go to a temp file in the same directory, are fsynced, then `os.replace`d: a crash leaves the
  old file or the new one, never half of one.
- Read-modify-write runs under an exclusive `flock` on a sibling lock file, so the CLI approving a
  pairing code and the agent issuing one cannot lose each other's change.
- A file that exists but cannot be parsed raises `StoreCorrupt` naming the file: it never silently
  becomes an empty store (which would drop every approved identity, or worse, be rewritten empty).
- An update that changes nothing writes nothing (no temp file, no fsync): a question asked through
  `update` costs the lock and a read, not a disk flush.
- `cached()` answers from memory while the file's stamp (inode, mtime, size) is unchanged, so the agent
  can ask "is this sender pending?" on every message and still see the CLI's changes at once.

Sync on purpose (small files, fcntl); async callers use asyncio.to_thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Stamp = tuple[int, int, int] | None  # (inode, mtime_ns, size) of the file; None while there is none


class StoreCorrupt(Exception):
    """The file exists but is not the JSON document we wrote; the message says which file and why."""


class JsonStore:
    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind  # what the file holds, for error messages
        self.writes = 0  # files written by this process, for tests and benchmarks
        self._cache: tuple[Stamp, dict[str, Any]] | None = None
        self._cache_lock = threading.Lock()  # callers run in worker threads

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def mtime(self) -> Stamp:
        """What changes whenever the file does. The inode too: every write is a rename of a new file, so two
        writes within one mtime tick, of the same size, still differ."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def read(self) -> dict[str, Any]:
        return self._load()[1]

    def _load(self) -> tuple[bytes | None, dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreCorrupt(
                f"{self.path} ({self.kind}) is corrupt and was left untouched: {exc}. "
                "Fix or remove it by hand; nothing was changed."
            ) from None
        if not isinstance(data, dict):
            raise StoreCorrupt(
                f"{self.path} ({self.kind}) must hold a JSON object, not {type(data).__name__}; nothing was changed."
            )
        return raw, data

    @staticmethod
    def _payload(data: dict[str, Any]) -> bytes:
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"

    def _write(self, payload: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.writes += 1
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Run `change` on the current document under the lock and write the result; return its value.

        `change` may raise to abort: nothing is written then. Nor when the document came out unchanged.
        """
        with self._locked():
            raw, data = self._load()
            result = change(data)
            payload = self._payload(data)
            if payload != raw and (raw is not None or data):
                self._write(payload)
            # Under the lock every writer takes, this stamp is the stamp of exactly this document.
            self._remember(self.mtime(), data)
            return result

    def snapshot(self) -> dict[str, Any]:
        # No lock: a reader must not wait while the CLI (or a stuck writer) holds it, and a rename is
        # atomic, so the read sees one whole version.
        return self.read()

    def cached(self) -> dict[str, Any]:
        """The document as of its current stamp, read again only when the file changed; do not modify it.

        No lock: writes are atomic renames, so a read sees one whole version. A write landing between the
        stat and the read leaves a newer document under an older stamp, which the next call reads again.
        """
        stamp = self.mtime()
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
        data = self.read()
        self._remember(stamp, data)
        return data

    def _remember(self, stamp: Stamp, data: dict[str, Any]) -> None:
        with self._cache_lock:
            self._cache = (stamp, data)
