"""One running agent per data home.

Two agents on one home would each keep their own cache of the same conversations and append to the same
files unaware of each other: each would see half of every conversation. The agent holds an exclusive
`flock` on `<home>/.lock` while it runs, with its pid written inside for the message the next one gets.
The kernel drops the lock when the process dies, however it dies, so a crash never leaves a stale lock.
The CLI's read-only commands (config, sessions, pairing, user) do not take it and keep working.

Sync on purpose (a few syscalls); async callers use asyncio.to_thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

LOCK_FILE = ".lock"


class HomeLockError(Exception):
    """The data home cannot be claimed; the message says why and what to do."""


class HomeInUse(HomeLockError):
    """Another process holds the data home; the message says which and what to do."""

    def __init__(self, home: Path, pid: int | None) -> None:
        self.home = home
        self.pid = pid
        who = f"operator-use (pid {pid})" if pid else "operator-use"
        super().__init__(
            f"Another {who} is already running on {home}; stop it or set OPERATOR_HOME to another directory."
        )


class UnsafeLockFile(HomeLockError):
    """`<home>/.lock` is not a regular file of ours (a symlink, a device, another user's file): it is never
    opened through, written or truncated."""


class HomeLock:
    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting, or raise HomeInUse (UnsafeLockFile when `.lock` is not a regular file
        of this user's, HomeLockError when it cannot be opened). Taking it again while held does nothing."""
        if self._fd is not None:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: processes the agent starts (shell tools) must not inherit the lock and keep it alive.
        # O_NOFOLLOW: a symlink planted at .lock would make us truncate whatever it points to.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeLockFile(
                    f"{self.path} is a symbolic link; remove it (operator-use creates its own)."
                ) from None
            raise HomeLockError(f"{self.path} cannot be opened: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                what = "is not a regular file" if not stat.S_ISREG(info.st_mode) else f"belongs to uid {info.st_uid}"
                raise UnsafeLockFile(
                    f"{self.path} {what}; operator-use will not use it as its lock: remove it "
                    "(operator-use creates its own)."
                )
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise HomeInUse(self.home, pid) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is only for the message; the lock itself is what counts
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing the descriptor releases the lock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
