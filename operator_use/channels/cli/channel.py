"""The terminal channel: what is typed at the prompt is a message; replies show as they are written and,
once final, as rendered markdown above the prompt.

Without a terminal on stdin (systemd, nohup, `docker run` without -t) the channel turns itself off and
the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ...messages import Address, IncomingMessage, TextPart
from ..base import Capabilities, Channel
from .config import CHAT_ID, HISTORY_FILE, LOCAL_USER, NO_TERMINAL, CLIConfig, stdin_is_terminal
from .render import render_reply
from .screen import TerminalScreen

log = logging.getLogger("operator_use.channels.cli")

WELCOME = (
    "operator-use: Enter sends, Alt-Enter (or Esc, Enter) starts a new line, /help lists the commands.\n"
    "Ctrl-C clears the line (on an empty line: /stop), Ctrl-D quits.\n"
)


class TerminalChannel(Channel):
    name = "cli"
    capabilities = Capabilities(can_edit=True, max_length=1_000_000, edit_interval=0.05, formatting="markdown")

    def __init__(
        self,
        config: CLIConfig | None = None,
        *,
        home: Path | None = None,
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        self.cli_config = config or CLIConfig()
        super().__init__(self.cli_config)
        self._on_eof = on_eof
        history = home / HISTORY_FILE if home is not None and self.cli_config.history else None
        self._screen = TerminalScreen(
            prompt=self.cli_config.prompt, reply_prefix=self.cli_config.reply_prefix, history_file=history
        )
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self._off = False

    @property
    def address(self) -> Address:
        return Address(channel=self.name, chat_id=CHAT_ID)

    def status(self) -> str:
        return "off" if self._off else "up"

    async def connect(self) -> None:
        if not stdin_is_terminal():
            # /dev/null, a pipe or nothing at all: reading would fail, or end at once and stop the agent
            # (on_eof). One line says why there is no prompt; the other channels are not affected.
            log.info(NO_TERMINAL)
            self._off = True
            return
        self._screen.open()
        await self._screen.print_above(WELCOME)
        self._reader = asyncio.create_task(self._read_loop(), name="cli-reader")
        self._reader.add_done_callback(_log_failure)

    async def disconnect(self) -> None:
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self._screen.close()

    def interrupt(self) -> bool:
        """A SIGINT (cli/main.py asks first): while the prompt is up it is Ctrl-C there (clear the line, or
        /stop on an empty one), never a stop of the agent; False when the terminal chat is not open."""
        return self._screen.interrupt()

    async def _read_loop(self) -> None:
        while (text := await self._screen.read()) is not None:
            if not text.strip():
                continue
            await self.emit(
                IncomingMessage(
                    channel=self.name,
                    chat_id=CHAT_ID,
                    user_id=LOCAL_USER,
                    user_name=os.environ.get("USER"),
                    parts=[TextPart(text=text)],
                )
            )
        if self._on_eof:
            self._on_eof()

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        self._next_id += 1
        message_id = str(self._next_id)
        self._screen.show(message_id, text)
        return message_id

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        self._screen.show(message_id, text)

    async def finalize(self, address: Address, message_id: str) -> None:
        text = self._screen.take(message_id)
        if text is None:
            return
        # rich's layout (and a code block's highlighting) is CPU work: not on the event loop.
        rendered = await asyncio.to_thread(
            render_reply, text, prefix=self.cli_config.reply_prefix, width=self._screen.columns()
        )
        await self._screen.print_above(rendered)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception():
        log.error("terminal reader failed", exc_info=task.exception())
