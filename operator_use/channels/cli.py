"""The terminal channel: lines typed on stdin are messages, replies stream to stdout.

The terminal cannot rewrite earlier output, so an "edit" prints only the text added since the last
edit; the gateway's stream editor drives it like any other platform. Without a terminal on stdin (systemd,
nohup, `docker run` without -t) the channel turns itself off and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import IO

from pydantic import Field

from ..messages import Address, IncomingMessage, TextPart
from .base import Capabilities, Channel, ChannelConfig

log = logging.getLogger(__name__)

LOCAL_USER = "local"
CHAT_ID = "terminal"
NO_TERMINAL = "terminal chat off: stdin is not a terminal"


class CLIConfig(ChannelConfig):
    enabled: bool = True
    # The terminal is the machine's owner: allowed and admin by default, nobody else.
    allow_from: list[str] = Field(default_factory=lambda: [LOCAL_USER])
    admins: list[str] = Field(default_factory=lambda: [LOCAL_USER])
    edit_interval: float | None = 0.05
    prompt: str = "you> "
    reply_prefix: str = "agent> "


class TerminalChannel(Channel):
    name = "cli"
    capabilities = Capabilities(can_edit=True, max_length=1_000_000, edit_interval=0.05, formatting="markdown")

    def __init__(
        self,
        config: CLIConfig | None = None,
        *,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        self.cli_config = config or CLIConfig()
        super().__init__(self.cli_config)
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._on_eof = on_eof
        self._printed: dict[str, str] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self._at_line_start = True
        self._off = False

    @property
    def address(self) -> Address:
        return Address(channel=self.name, chat_id=CHAT_ID)

    def status(self) -> str:
        return "off" if self._off else "up"

    async def connect(self) -> None:
        if not stdin_is_terminal(self._stdin):
            # /dev/null, a pipe or nothing at all: reading would fail, or end at once and stop the agent
            # (on_eof). One line says why there is no prompt; the other channels are not affected.
            log.info(NO_TERMINAL)
            self._off = True
            return
        self._write("operator-use: type a message, /help for commands, Ctrl-D to quit.\n" + self.cli_config.prompt)
        self._reader = asyncio.create_task(self._read_loop(), name="cli-reader")
        self._reader.add_done_callback(_log_failure)

    async def disconnect(self) -> None:
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read_loop(self) -> None:
        async for line in self._lines():
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            self._at_line_start = True
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

    async def _lines(self) -> AsyncIterator[str]:
        # Read the terminal without a thread, so shutdown never waits on a blocked readline.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self._stdin)
        try:
            while line := await reader.readline():
                yield line.decode("utf-8", errors="replace")
        finally:
            transport.close()

    def _write(self, text: str) -> None:
        if not text:
            return
        self._stdout.write(text)
        self._stdout.flush()
        self._at_line_start = text.endswith("\n")

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        self._next_id += 1
        message_id = str(self._next_id)
        self._write(("" if self._at_line_start else "\n") + self.cli_config.reply_prefix + text)
        self._printed[message_id] = text
        return message_id

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        before = self._printed.get(message_id, "")
        if text.startswith(before):
            self._write(text[len(before) :])
        else:  # the text changed above the cursor: show the new version whole
            self._write("\n" + self.cli_config.reply_prefix + text)
        self._printed[message_id] = text

    async def finalize(self, address: Address, message_id: str) -> None:
        self._printed.pop(message_id, None)
        self._write(("" if self._at_line_start else "\n") + "\n" + self.cli_config.prompt)


def stdin_is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default: this process's stdin, None when it was closed) is a terminal."""
    stream = sys.stdin if stream is None else stream
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # a closed stream
        return False


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception():
        log.error("terminal reader failed", exc_info=task.exception())
