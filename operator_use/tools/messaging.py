"""send_message and send_file: post to the turn's chat, or (admins only) to another allowed chat.

"Another allowed chat" is a conversation on a running channel that the agent already knows (it has a
history), or whose chat id the channel's `allow_from`/`admins` names explicitly. Anything else is
refused: the model must not become a way to message arbitrary people.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from ..agent.tools import Tool, ToolError
from ..agent.turn import TurnContext
from ..bus.base import Bus
from ..channels.base import ChannelConfig
from ..messages import Address, FilePart, OutgoingMessage, Part, TextPart
from ..session.store import SessionStore
from .paths import display_path, open_regular_file, resolve_in_workspace

log = logging.getLogger(__name__)

TARGET_HELP = "Another chat as 'channel:chat_id' or 'channel:chat_id:thread_id' (admins only); omit for this chat."


class SendMessageParams(BaseModel):
    text: str = Field(description="The message text (markdown).")
    to: str | None = Field(None, description=TARGET_HELP)


class SendFileParams(BaseModel):
    path: str = Field(description="File path, relative to the workspace.")
    caption: str | None = Field(None, description="Optional text sent with the file.")
    to: str | None = Field(None, description=TARGET_HELP)


class Messenger:
    def __init__(
        self,
        bus: Bus,
        channel_configs: Mapping[str, ChannelConfig],
        sessions: SessionStore,
        *,
        sandbox: bool = True,
        max_file_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.bus = bus
        self.channel_configs = channel_configs
        self.sessions = sessions
        self.sandbox = sandbox
        self.max_file_bytes = max_file_bytes

    async def _target(self, ctx: TurnContext, to: str | None) -> Address:
        if not to or to.strip() in ("", ctx.address.key):
            return ctx.address
        if not ctx.is_admin:
            raise ToolError("only admins may send to another chat; omit `to` to post in this chat")
        channel, _, rest = to.strip().partition(":")
        chat_id, _, thread = rest.partition(":")
        if not channel or not chat_id:
            raise ToolError(f"bad target {to!r}: use 'channel:chat_id' or 'channel:chat_id:thread_id'")
        config = self.channel_configs.get(channel)
        if config is None:
            raise ToolError(f"no running channel {channel!r} (running: {', '.join(self.channel_configs)})")
        address = Address(channel=channel, chat_id=chat_id, thread_id=thread or None)
        named = chat_id in config.allow_from or chat_id in config.admins
        known = await asyncio.to_thread(lambda: self.sessions.path_for(address.key).exists())
        if not (named or known):
            raise ToolError(
                f"{to!r} is not a chat this agent knows; it can only post where it has talked before "
                "or to ids listed in the channel's allow_from/admins"
            )
        log.info("%s:%s sends from %s to %s", ctx.channel, ctx.user_id, ctx.session_key, address.key)
        return address

    async def send_message(self, ctx: TurnContext, p: SendMessageParams) -> str:
        if not p.text.strip():
            raise ToolError("text is empty")
        address = await self._target(ctx, p.to)
        await self.bus.publish_outgoing(OutgoingMessage.of_text(address, p.text))
        return "Sent." if address == ctx.address else f"Sent to {address.key}."

    def _read(self, ctx: TurnContext, path_text: str) -> tuple[str, bytes]:
        path = resolve_in_workspace(ctx.workspace, path_text, must_exist=True, sandbox=self.sandbox)
        shown = display_path(ctx.workspace, path)
        fd, st = open_regular_file(ctx.workspace, path, sandbox=self.sandbox, shown=shown)
        with os.fdopen(fd, "rb") as f:
            if st.st_size > self.max_file_bytes:
                raise ToolError(f"{shown!r} is {st.st_size} bytes; the limit is {self.max_file_bytes}")
            return Path(shown).name, f.read(self.max_file_bytes + 1)[: self.max_file_bytes]

    async def send_file(self, ctx: TurnContext, p: SendFileParams) -> str:
        address = await self._target(ctx, p.to)
        try:
            name, data = await asyncio.to_thread(self._read, ctx, p.path)
        except OSError as exc:
            raise ToolError(f"{p.path!r}: {exc.strerror or exc}") from None
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        parts: list[Part] = [FilePart(name=name, mime=mime, data=data)]
        if p.caption:
            parts.insert(0, TextPart(text=p.caption))
        await self.bus.publish_outgoing(OutgoingMessage(address=address, parts=parts))
        return f"Sent {name} ({len(data)} bytes)" + ("" if address == ctx.address else f" to {address.key}") + "."

    def tools(self) -> list[Tool]:
        return [
            Tool(
                "send_message",
                "Post a separate message to this chat now (your reply still follows), or, for "
                "admins, to another chat the agent knows.",
                SendMessageParams,
                self.send_message,
                risk="low",
            ),
            Tool(
                "send_file",
                "Send a file from the workspace to this chat (or, for admins, another known chat).",
                SendFileParams,
                self.send_file,
                risk="low",
            ),
        ]
