"""Where the control socket lives, and binding/connecting to it whatever the length of the data home's path."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

SOCKET_FILE = "control.sock"
# sun_path holds 108 bytes with its terminating NUL; keep a margin.
_MAX_PATH = 100

T = TypeVar("T")


def socket_path(home: Path) -> Path:
    return Path(home) / SOCKET_FILE


def via_short_path(path: Path, use: Callable[[str], T]) -> T:
    """Call `use` with `path`, or for a path too long for a Unix socket address, with the same file reached
    through /proc/self/fd/<directory descriptor>/ (Linux), so a deep data home still works."""
    if len(os.fsencode(path)) <= _MAX_PATH:
        return use(str(path))
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return use(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


def bind_private(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600 from its creation on (fchmod before bind sets the mode
    the kernel gives the file), replacing a stale file a crashed agent left (the caller holds the home lock,
    so no live agent owns it). Sync: a few syscalls."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        via_short_path(path, sock.bind)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
