"""The web chat's generated token, kept in the data home so it survives restarts.

An open page's HttpOnly cookie holds the token: with the same token after a restart (or `/restart`) the
page reconnects by itself. The file is created with mode 0600 under a temporary name (O_EXCL: never a
file someone else prepared) and linked into place, so it is never readable by others, not even while it
is being written, and a reader never sees half a token. Anything else in its place (a symlink, a FIFO, a
device, a damaged file) is replaced, never followed or waited on. Synchronous: callers run it in a thread.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_FILE = "web_token"
_VALID = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


def stored_token(path: Path) -> str:
    """The token in `path`, created (random) if the file is missing or unusable."""
    existing = _read(path)
    if existing is not None:
        return existing
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)  # fails if the file appeared meanwhile: that one wins
        except FileExistsError:
            raced = _read(path)
            if raced is not None:
                return raced
            os.replace(temp, path)  # the one there is unusable (already reported): ours replaces it
    finally:
        temp.unlink(missing_ok=True)
    log.info("web chat: a new token was stored in %s", path)
    return token


# Opening never waits nor follows: a FIFO put in the token's place would block O_RDONLY until a writer
# came (forever, and the channel with it), a terminal would become our controlling one.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)


def _read(path: Path) -> str | None:
    """The token in `path`, or None when there is none usable (the caller then stores a new one)."""
    try:
        # Checked before opening too: opening a device may do something by itself.
        if not stat.S_ISREG(os.lstat(path).st_mode):
            log.warning("web chat: %s is not a regular file; a new token replaces it", path)
            return None
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("web chat: cannot read the token file %s (%s); a new token replaces it", path, e.strerror or e)
        return None
    with os.fdopen(fd, "r", encoding="ascii", errors="replace") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):  # swapped in between the lstat and the open
            log.warning("web chat: %s is not a regular file; a new token replaces it", path)
            return None
        if info.st_mode & 0o077:
            # Someone loosened it: tighten it back (the token in it may have been seen; delete the file to
            # get a new one).
            os.fchmod(f.fileno(), 0o600)
            log.warning("web chat: %s was readable by others; its mode is 0600 again", path)
        text = f.read(1024).strip()
    if not _VALID.match(text):
        log.warning("web chat: the token file %s is damaged; a new token replaces it", path)
        return None
    return text
