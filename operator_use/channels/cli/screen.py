"""The terminal's screen, with prompt_toolkit: the input line at the bottom, the reply being written just
above it, and everything finished (replies, log records, prints) printed above both.

The reply being written is part of the prompt's own drawing, so it can change and disappear without a
trace: once it is final, the channel prints the rendered version above and the plain one is gone. While
the screen is up, `sys.stdout` and `sys.stderr` go through prompt_toolkit's `StdoutProxy`, so a log
record never lands inside the line being typed; the typed text is redrawn below it.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import StyleAndTextTuples
    from prompt_toolkit.patch_stdout import StdoutProxy

STOP = "/stop"


class TerminalScreen:
    def __init__(self, *, prompt: str, reply_prefix: str, history_file: Path | None) -> None:
        self.prompt = prompt
        self.reply_prefix = reply_prefix
        self.history_file = history_file
        self._live: dict[str, str] = {}  # message id -> its text so far, in the order they were sent
        self._session: PromptSession[str] | None = None
        self._proxy: StdoutProxy | None = None
        self._saved: tuple[TextIO, TextIO] | None = None
        self._out: TextIO = sys.stdout

    # --- lifecycle ---

    def open(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import StdoutProxy

        from .history import open_history

        self._out = sys.stdout
        self._session = PromptSession(
            message=self._message,
            history=open_history(self.history_file),
            key_bindings=_key_bindings(),
            multiline=False,  # Enter sends; a paste keeps its newlines; Alt-Enter adds one
            prompt_continuation=lambda width, line, soft_wrap: " " * width,
            enable_open_in_editor=False,
        )
        # raw: the rendered replies' colours pass through. Created after the session, whose output is
        # the real stdout.
        self._proxy = StdoutProxy(raw=True)
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = self._proxy

    async def close(self) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._proxy is not None:
            # Flushes what is left and joins its writer thread: not on the event loop.
            await asyncio.to_thread(self._proxy.close)
            self._proxy = None
        history = self._session.history if self._session is not None else None
        if history is not None and hasattr(history, "close"):
            history.close()

    # --- input ---

    def interrupt(self) -> bool:
        """A SIGINT while the screen is open: what Ctrl-C at the prompt does. prompt_toolkit leaves raw mode
        while it prints above the prompt, so a Ctrl-C typed then arrives as a signal, not as a key. False
        when the screen is not open (the caller does what a SIGINT otherwise does: stop the agent)."""
        if self._saved is None or self._session is None:
            return False
        if self._session.app.is_running:
            _interrupt(self._session.default_buffer)
            self._session.app.invalidate()  # not a key press: nothing else redraws the line
        # Between two prompts (a line just sent) there is no line to clear: the signal is only dropped.
        return True

    async def read(self) -> str | None:
        """The next message typed (a paste is one message, newlines kept), or None on Ctrl-D."""
        assert self._session is not None
        try:
            # handle_sigint off: the agent's own SIGINT handler (a clean stop) must survive each prompt.
            return await self._session.prompt_async(handle_sigint=False, set_exception_handler=False)
        except EOFError:
            return None

    # --- output ---

    def show(self, message_id: str, text: str) -> None:
        """Show `text` as the message being written (replacing its earlier version)."""
        self._live[message_id] = text
        self._invalidate()

    def take(self, message_id: str) -> str | None:
        """Stop showing a message being written; its last text."""
        text = self._live.pop(message_id, None)
        self._invalidate()
        return text

    async def print_above(self, text: str) -> None:
        """Write `text` (which may hold colour codes) above the prompt, which is redrawn below it."""
        from prompt_toolkit.application import run_in_terminal

        def write() -> None:
            self._out.write(text)
            self._out.flush()

        if self._session is None:
            write()
        else:
            await run_in_terminal(write, in_executor=False)

    def columns(self) -> int:
        return shutil.get_terminal_size((80, 24)).columns

    # --- drawing ---

    def _message(self) -> StyleAndTextTuples:
        session = self._session
        done = session is not None and session.app.is_done
        fragments: StyleAndTextTuples = []
        if self._live and not done:  # a sent line leaves only itself on the screen
            size = shutil.get_terminal_size((80, 24))
            text = self.reply_prefix + "\n\n".join(self._live.values())
            # Only the tail while it is being written: the prompt must stay on the screen.
            fragments.append(("class:reply", "\n".join(tail(text, size.columns, max(1, size.lines - 4)))))
            fragments.append(("", "\n"))
        fragments.append(("class:prompt", self.prompt))
        return fragments

    def _invalidate(self) -> None:
        if self._session is not None and self._session.app.is_running:
            self._session.app.invalidate()


def tail(text: str, columns: int, rows: int) -> list[str]:
    """The last lines of `text` that fit in `rows` rows of `columns` columns, with a "…" first when cut."""
    from prompt_toolkit.utils import get_cwidth

    columns = max(1, columns)
    lines = text.split("\n")
    heights = [max(1, -(-get_cwidth(line) // columns)) for line in lines]
    if sum(heights) <= rows:
        return lines
    budget = rows - 1  # a row for the "…"
    kept: list[str] = []
    for line, height in zip(reversed(lines), reversed(heights), strict=True):
        if height > budget:
            if budget > 0:
                kept.append(line[-budget * columns :])
            break
        kept.append(line)
        budget -= height
    return ["…", *reversed(kept)]


def _key_bindings() -> Any:
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

    bindings = KeyBindings()

    @bindings.add("escape", "enter")  # Alt-Enter, or Esc then Enter
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _ctrl_c(event: KeyPressEvent) -> None:
        _interrupt(event.current_buffer)

    return bindings


def _interrupt(buffer: Any) -> None:
    if buffer.text:  # Ctrl-C clears the line ...
        buffer.reset()
    else:  # ... and on an empty line stops the running reply
        buffer.text = STOP
        buffer.validate_and_handle()
