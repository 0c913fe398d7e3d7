"""Received files land in the workspace's inbox, where the agent's file tools can read them.

Only a safe base name of the sender's file name survives (no path, no odd characters), a prefix keeps
names unique, and an existing file is never overwritten. Blocking I/O: call it from a worker thread.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, default: str = "file") -> str:
    base = Path(name or default).name
    cleaned = _UNSAFE.sub("_", base).strip("._") or default
    return cleaned[-100:]  # the end keeps the extension


def save_to_inbox(
    inbox: Path, name: str | None, *, data: bytes | None = None, source: Path | None = None, prefix: str | None = None
) -> Path:
    """Write `data` (or copy the file `source`, never held in memory) as `<prefix>-<safe name>`."""
    inbox.mkdir(parents=True, exist_ok=True)
    safe = safe_filename(name)
    stem = prefix or uuid.uuid4().hex[:8]
    while True:
        path = inbox / f"{stem}-{safe}"
        try:
            with open(path, "xb") as out:  # "x": a name collision gets a new name, never an overwrite
                if source is not None:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, out)
                else:
                    out.write(data or b"")
            return path
        except FileExistsError:
            stem = f"{stem[:32]}-{uuid.uuid4().hex[:6]}"
