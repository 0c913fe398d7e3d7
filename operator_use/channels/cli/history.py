"""The terminal's input history: prompt_toolkit's file format, read and written off the event loop.

The file is only its owner's (people paste tokens into chats), also one an older version left 0644, and
keeps the last `MAX_ENTRIES` messages: it is read in full at each start, so it must not grow forever.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from prompt_toolkit.history import FileHistory, History, ThreadedHistory

log = logging.getLogger(__name__)

MAX_ENTRIES = 1000


class _AppendingHistory(FileHistory):
    """FileHistory whose appends run on one writer thread, in order, in a file only its owner can read.
    Loading trims the file to the last `max_entries` messages, on the same thread (an append typed before
    the history finished loading is not lost)."""

    def __init__(self, path: Path, max_entries: int = MAX_ENTRIES) -> None:
        super().__init__(path)
        self.path = path
        self.max_entries = max_entries
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="terminal-history")

    def load_history_strings(self) -> Iterable[str]:
        # Called by ThreadedHistory in its loader thread: waiting on the writer blocks no event loop.
        strings = self._writer.submit(self._load_and_trim).result()
        return reversed(strings)

    def _load_and_trim(self) -> list[str]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        with open(fd, "rb") as file:
            _private(fd)
            data = file.read()
        blocks = _entries(data.decode("utf-8", errors="replace"))
        if len(blocks) > self.max_entries:
            blocks = blocks[-self.max_entries :]
            self._rewrite("".join(raw for raw, _ in blocks))
        return [text for _, text in blocks]

    def _rewrite(self, content: str) -> None:
        """Replace the file at once: a crash mid-write leaves the old file, not half of the new one."""
        fd, tmp = tempfile.mkstemp(prefix=".terminal_history.", dir=self.path.parent)  # mode 0600
        try:
            with open(fd, "wb") as file:
                file.write(content.encode("utf-8"))
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def store_string(self, string: str) -> None:
        self._writer.submit(self._append, string).add_done_callback(_log_failure)

    def _append(self, string: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _private(fd)
        finally:
            os.close(fd)
        super().store_string(string)

    def close(self) -> None:
        self._writer.shutdown(wait=False)


def _private(fd: int) -> None:
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through open(): tighten it
    except OSError as exc:  # not ours (another owner): say so, the chat goes on
        log.warning("terminal history: cannot make the file private: %s", exc)


def _entries(content: str) -> list[tuple[str, str]]:
    """The file's entries, oldest first: (its raw lines with the comment above it, the message). The
    parsing is FileHistory's: a message is a run of lines starting with "+"."""
    blocks: list[tuple[str, str]] = []
    raw: list[str] = []
    lines: list[str] = []
    for line in content.splitlines(keepends=True):
        if line.startswith("+"):
            lines.append(line[1:])
        elif lines:
            blocks.append(("".join(raw), "".join(lines).removesuffix("\n")))
            raw, lines = [], []
        raw.append(line)
    if lines:
        blocks.append(("".join(raw), "".join(lines).removesuffix("\n")))
    return blocks


def _log_failure(future: Future[None]) -> None:
    if future.exception() is not None:
        log.warning("terminal history not saved: %s", future.exception())


class TerminalHistory(ThreadedHistory):
    """Loaded in a thread at the first prompt; `close` stops the writer once queued lines are written."""

    def __init__(self, path: Path, max_entries: int = MAX_ENTRIES) -> None:
        self._file = _AppendingHistory(path, max_entries)
        super().__init__(self._file)

    def close(self) -> None:
        self._file.close()


def open_history(path: Path | None) -> History | None:
    return TerminalHistory(path) if path is not None else None
