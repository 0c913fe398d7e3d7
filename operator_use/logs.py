"""The agent's log: a size-rotated file in the data home plus the console, written off the event loop.

`LoggingConfig` is the `logging` section of config.yaml. Records are handed to a queue by the logging
call (no I/O on the caller's thread, so the event loop never waits on the disk or a full stderr pipe);
a `QueueListener` thread writes them to the `RotatingFileHandler` and to stderr.

A record may quote what the agent did not write (an LLM's error body, a page): its control characters are
made harmless (controls.py) before they reach a terminal, as ^[ on the console and as \x1b in the file
(which `tail -f` prints to a terminal too).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import sys
from pathlib import Path

from pydantic import Field

from .config_model import StrictModel
from .controls import escaped, visible

LOG_FILE = "operator-use.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LoggingConfig(StrictModel):
    # The file <home>/logs/operator-use.log is rotated when the next record would take it past max_bytes;
    # `backups` older files are kept (operator-use.log.1 the newest). 0 backups: the file is emptied and
    # starts again at max_bytes (nothing older is kept). 0 bytes: never rotate.
    max_bytes: int = Field(10_000_000, ge=0)
    backups: int = Field(5, ge=0, le=1000)


class LogSetup:
    """What `setup` installed; `close()` flushes the queue and stops the writer thread."""

    def __init__(self, path: Path, listener: logging.handlers.QueueListener, handler: logging.Handler) -> None:
        self.path = path
        self._listener: logging.handlers.QueueListener | None = listener
        self._handler = handler

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        logging.getLogger().removeHandler(self._handler)
        listener.stop()  # writes what is still queued, then joins the thread
        for handler in listener.handlers:
            handler.close()


class VisibleFormatter(logging.Formatter):
    """For a terminal: control characters as ^X (an ESC in an error body would retitle the window or
    clear the screen; the terminal chat's proxy writes raw)."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


class EscapedFormatter(logging.Formatter):
    """For the file: control characters as \x1b-style escapes, so no raw ESC byte is stored."""

    def format(self, record: logging.LogRecord) -> str:
        return escaped(super().format(record))


class ConsoleHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each record, not as it was at setup: while the terminal chat is up,
    that is prompt_toolkit's proxy (channels/cli/screen.py), which prints the record above the prompt and
    redraws the line being typed below it. Control characters are shown, never sent (`VisibleFormatter`)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(VisibleFormatter())

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Log records may quote what users wrote: the files are 0600 (also one an older version left 0644).
    With backupCount 0 the standard handler never truncates (it reopens the same file for appending):
    here the file is emptied instead, so max_bytes still caps it."""

    def _open(self):  # the stdlib's own signature is untyped
        stream = open(  # noqa: SIM115 — the handler keeps it open and closes it
            self.baseFilename,
            self.mode,
            encoding=self.encoding,
            errors=self.errors,
            opener=lambda name, flags: os.open(name, flags, 0o600),
        )
        os.fchmod(stream.fileno(), 0o600)
        return stream

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
            return
        if self.stream:
            self.stream.close()
        self.stream = None
        mode, self.mode = self.mode, "w"
        try:
            self.stream = self._open()
        finally:
            self.mode = mode


def setup(home: Path, level: str, config: LoggingConfig, *, quiet_console: bool) -> LogSetup:
    log_dir = home / "logs"
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(log_dir, 0o700)  # one an older version made 0755
    except OSError:
        pass  # not ours to change: the files themselves are still 0600
    path = log_dir / LOG_FILE
    file_handler = PrivateRotatingFileHandler(
        path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"
    )
    file_handler.setFormatter(EscapedFormatter())
    console = ConsoleHandler()
    console.setLevel(logging.WARNING if quiet_console else level.upper())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    # The QueueHandler formats each record once on the caller's side (args and tracebacks are flattened
    # into the message), so the writers only print the finished line.
    to_queue = logging.handlers.QueueHandler(records)
    to_queue.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(records, file_handler, console, respect_handler_level=True)
    root = logging.getLogger()
    root.setLevel(level.upper())
    root.addHandler(to_queue)
    listener.start()
    done = LogSetup(path, listener, to_queue)
    atexit.register(done.close)  # an exit that skips the caller's cleanup still writes the last lines
    return done
