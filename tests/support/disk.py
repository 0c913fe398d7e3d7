"""Real write failures for tests: a tiny tmpfs that fills up (ENOSPC), or the process's file-size limit
(EFBIG). The kernel refuses the write in both; nothing of ours is mocked."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .deps import unavailable


class TinyDisk:
    """A freshly mounted tmpfs of `size` bytes at `root`. `full()` fills it to the last byte for the
    duration of the block (writes then fail part way with ENOSPC), and frees it again afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.errno = errno.ENOSPC

    @contextlib.contextmanager
    def full(self, target: Path | None = None) -> Iterator[None]:
        filler = self.root / ".filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # Page-sized chunks, then single bytes: the filesystem ends up with no whole page to give.
            for chunk in (b"\0" * 4096, b"\0"):
                try:
                    while True:
                        os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        try:
            yield
        finally:
            filler.unlink()


class FileSizeLimit:
    """RLIMIT_FSIZE set just past `target`'s current size for the duration of the block: a write that
    crosses it is cut short and the next one fails with EFBIG (SIGXFSZ ignored meanwhile)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.errno = errno.EFBIG

    @contextlib.contextmanager
    def full(self, target: Path | None = None) -> Iterator[None]:
        assert target is not None, "the limit is per file size: say which file must not grow"
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (target.stat().st_size + 16, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "256k") -> Iterator[TinyDisk]:
    """Mount a tmpfs of `size` (needs root; skips the test otherwise) and unmount it afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        unavailable("no mount command here")
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield TinyDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True, capture_output=True)
