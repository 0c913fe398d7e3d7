"""A small JSON document on disk that two processes may change: the agent and the `operator-use` CLI.

- Writes go to a temp file in the same directory, are fsynced, then `os.replace`d: a crash leaves the
  old file or the new one, never half of one.
- Read-modify-write runs under an exclusive `flock` on a sibling lock file, so the CLI approving a
  pairing code and the agent issuing one cannot lose each other's change.
- A file that exists but cannot be parsed raises `StoreCorrupt` naming the file: it never silently
  becomes an empty store (which would drop every approved identity, or worse, be rewritten empty).

Sync on purpose (small files, fcntl); async callers use asyncio.to_thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class StoreCorrupt(Exception):
    """The file exists but is not the JSON document we wrote; the message says which file and why."""


class JsonStore:
    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind  # what the file holds, for error messages

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def mtime(self) -> float | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns + st.st_size / 1e6  # size too: two writes within one mtime tick differ

    def read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreCorrupt(f"{self.path} ({self.kind}) is corrupt and was left untouched: {exc}. "
                               "Fix or remove it by hand; nothing was changed.") from None
        if not isinstance(data, dict):
            raise StoreCorrupt(f"{self.path} ({self.kind}) must hold a JSON object, not {type(data).__name__}; "
                               "nothing was changed.")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        payload = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
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
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Run `change` on the current document under the lock and write the result; return its value.

        `change` may raise to abort: nothing is written then.
        """
        with self._locked():
            data = self.read()
            result = change(data)
            self._write(data)
            return result

    def snapshot(self) -> dict[str, Any]:
        with self._locked():
            return self.read()
