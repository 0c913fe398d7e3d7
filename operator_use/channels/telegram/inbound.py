"""Telegram updates -> IncomingMessage: who is addressed in groups, topics, and media parts.

Works on python-telegram-bot's objects by attribute only, so it imports nothing from the SDK.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ...messages import AudioPart, FilePart, ImagePart, IncomingMessage, Part, TextPart
from ..base import withheld
from ..inbox import safe_filename, save_to_inbox
from .config import TelegramConfig

log = logging.getLogger(__name__)

_COMMAND = re.compile(r"^/[A-Za-z0-9_]+(?:@([A-Za-z0-9_]+))?")


class RecentIds:
    """A bounded set of recently seen update ids: the same update delivered twice is handled once."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._ids: OrderedDict[int, None] = OrderedDict()

    def add(self, update_id: int) -> bool:
        """True when the id is new."""
        if update_id in self._ids:
            self._ids.move_to_end(update_id)
            return False
        self._ids[update_id] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class Inbound:
    def __init__(
        self,
        channel: str,
        config: TelegramConfig,
        bot: Any,
        workspace: Path,
        *,
        may_fetch: Callable[[str, str | None], Awaitable[bool]],
    ) -> None:
        self.channel = channel
        self.may_fetch = may_fetch  # Channel.may_fetch: (user id, user name) -> are their files fetched?
        self.config = config
        self.bot = bot
        self.bot_id = bot.id
        self.username = (bot.username or "").lower()
        self.workspace = workspace

    async def translate(self, update: Any) -> IncomingMessage | None:
        m = update.message
        if m is None or m.from_user is None:
            return None  # edits, channel posts, anonymous admins: not conversations with a user
        direct = m.chat.type == "private"
        text = m.text or m.caption or ""
        command = _COMMAND.match(text)
        if self._for_another_bot(command):
            return None  # /cmd@another_bot
        mentioned = self._mentioned(m, text)
        if not direct:
            policy = self.config.group_policy
            # A /command is addressed to the bots of the group by itself.
            if policy == "never" or (policy == "mention" and not (mentioned or command)):
                return None
        if mentioned and not command:
            text = re.sub(rf"^\s*@{re.escape(self.username)}\b[\s,:]*", "", text, flags=re.IGNORECASE)
            # Checked again without the mention: "@this_bot /new@other_bot" is still the other bot's command.
            if self._for_another_bot(_COMMAND.match(text)):
                return None
        parts = await self._parts(m, text)
        if not parts:
            return None
        topic = m.message_thread_id if getattr(m, "is_topic_message", False) else None
        return IncomingMessage(
            channel=self.channel,
            chat_id=str(m.chat.id),
            thread_id=str(topic) if topic else None,
            user_id=str(m.from_user.id),
            user_name=m.from_user.username,
            parts=parts,
            message_id=str(m.message_id),
            is_direct=direct,
            mentioned=mentioned,
        )

    def press(self, query: Any, command: str) -> IncomingMessage | None:
        """A button press (a callback query) as the presser's own message saying `command`, in the chat and
        topic of the message the button was under; None when Telegram no longer says where that was."""
        m, user = query.message, query.from_user
        if m is None or m.chat is None or user is None:
            return None
        topic = getattr(m, "message_thread_id", None) if getattr(m, "is_topic_message", False) else None
        return IncomingMessage(
            channel=self.channel,
            chat_id=str(m.chat.id),
            thread_id=str(topic) if topic else None,
            user_id=str(user.id),
            user_name=user.username,
            parts=[TextPart(text=command)],
            message_id=str(m.message_id),
            is_direct=m.chat.type == "private",
            mentioned=True,  # pressing the bot's own button addresses the bot
        )

    def _for_another_bot(self, command: re.Match[str] | None) -> bool:
        return bool(command and command.group(1) and command.group(1).lower() != self.username)

    def _mentioned(self, m: Any, text: str) -> bool:
        entities = m.entities or m.caption_entities or ()
        for e in entities:
            if e.type == "mention" and self.username:
                # Offsets are in UTF-16 code units.
                raw = text.encode("utf-16-le")[e.offset * 2 : (e.offset + e.length) * 2].decode("utf-16-le")
                if raw.lower() == "@" + self.username:
                    return True
            elif e.type == "text_mention" and e.user is not None and e.user.id == self.bot_id:
                return True
        reply = m.reply_to_message
        # In a forum topic every message "replies" to the topic's creation message: not to the bot.
        return (
            reply is not None
            and reply.from_user is not None
            and reply.from_user.id == self.bot_id
            and getattr(reply, "forum_topic_created", None) is None
        )

    async def _parts(self, m: Any, text: str) -> list[Part]:
        from . import ptb

        parts: list[Part] = [TextPart(text=text)] if text.strip() else []
        media = [
            what
            for what, present in (
                ("a photo", m.photo),
                ("a voice note", m.voice),
                ("an audio file", m.audio),
                ("a document", m.document),
            )
            if present
        ]
        # Updates are handled one at a time: an unknown sender's files would hold up everyone behind them.
        if media and not await self.may_fetch(str(m.from_user.id), m.from_user.username):
            return parts + [withheld(what) for what in media]
        try:
            if m.photo:
                # Telegram lists the sizes smallest first.
                parts.append(ImagePart(data=await self._download(m.photo[-1].file_id), mime="image/jpeg"))
            if m.voice:
                parts.append(
                    AudioPart(
                        data=await self._download(m.voice.file_id),
                        mime=m.voice.mime_type or "audio/ogg",
                        duration_s=ptb.seconds(m.voice, "duration"),
                        voice_note=True,
                    )
                )
            if m.audio:
                parts.append(
                    AudioPart(
                        data=await self._download(m.audio.file_id),
                        mime=m.audio.mime_type or "audio/mpeg",
                        duration_s=ptb.seconds(m.audio, "duration"),
                        voice_note=False,
                    )
                )
            if m.document:
                parts.append(await self._save_document(m.document))
        except ptb.TelegramError as e:
            # Typically "file is too big" (20 MB through the public Bot API): tell the agent, lose nothing else.
            log.warning("telegram: could not download a file from chat %s: %s", m.chat.id, e)
            parts.append(TextPart(text=f"[an attachment could not be downloaded: {e.message}]"))
        return parts

    async def _fetch(self, file_id: str) -> tuple[Any, Path | None]:
        """The file's metadata, and its path when a local Bot API server (--local) has it on this disk."""
        file = await self.bot.get_file(file_id)
        path = file.file_path or ""
        return file, Path(path) if self.config.local_mode and path.startswith("/") else None

    async def _download(self, file_id: str) -> bytes:
        file, local = await self._fetch(file_id)
        if local is not None:
            return await asyncio.to_thread(local.read_bytes)
        return bytes(await file.download_as_bytearray())

    async def _save_document(self, doc: Any) -> FilePart:
        file, local = await self._fetch(doc.file_id)
        data = None if local is not None else bytes(await file.download_as_bytearray())
        name = safe_filename(doc.file_name, "document")
        inbox = self.workspace / "inbox"
        # Up to 2 GB from a local Bot API server: copied, never held in memory.
        path = await asyncio.to_thread(lambda: save_to_inbox(inbox, name, data=data, source=local))
        return FilePart(name=doc.file_name or name, mime=doc.mime_type or "application/octet-stream", path=str(path))
