"""From a discord.py `Message` to our `IncomingMessage`: who, where, whether to answer, and its parts.

Conversation keys: a direct message is `discord:<dm channel>`; a guild channel `discord:<channel>`; a
thread `discord:<parent channel>:<thread>`, so each thread keeps its own history and replies go into it
(Discord threads are channels: the thread id is where we post).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from ...messages import AudioPart, FilePart, ImagePart, IncomingMessage, Part, TextPart
from ..base import withheld
from ..inbox import save_to_inbox
from .config import DiscordConfig

log = logging.getLogger(__name__)


def location(message: Any) -> tuple[str, str | None, str | None]:
    """(chat_id, thread_id, guild_id) of a message."""
    channel = message.channel
    guild_id = str(message.guild.id) if message.guild is not None else None
    parent_id = getattr(channel, "parent_id", None)
    # Only threads have a parent that is a channel; a channel's parent_id is its category.
    if parent_id is not None and _is_thread(channel):
        return str(parent_id), str(channel.id), guild_id
    return str(channel.id), None, guild_id


def _is_thread(channel: Any) -> bool:
    import discord

    return isinstance(channel, discord.Thread)


def addressed_to_bot(message: Any, bot_id: int) -> bool:
    """The bot was @mentioned, or the message replies to one of the bot's messages."""
    if any(u.id == bot_id for u in message.mentions):
        return True
    ref = message.reference
    resolved = getattr(ref, "resolved", None) if ref is not None else None
    author = getattr(resolved, "author", None)
    return author is not None and author.id == bot_id


def should_answer(config: DiscordConfig, message: Any, bot_id: int) -> bool:
    if message.guild is None:
        return config.direct_messages
    chat_id, thread_id, guild_id = location(message)
    policy = config.policy_for(thread_id, chat_id, guild_id)
    if policy == "never":
        return False
    return policy == "all" or addressed_to_bot(message, bot_id)


def strip_mention(content: str, bot_id: int) -> str:
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


def groups_of(message: Any) -> list[str]:
    """ "guild:<id>" and "role:<id>" of the author where the message was written (none in DMs)."""
    return member_groups(message.guild, message.author)


def member_groups(guild: Any, member: Any) -> list[str]:
    """ "guild:<id>" and "role:<id>" of a guild member (none outside a guild)."""
    if guild is None:
        return []
    groups = [f"guild:{guild.id}"]
    for role in getattr(member, "roles", []):
        if not role.is_default():  # @everyone: every member has it
            groups.append(f"role:{role.id}")
    return groups


def press_to_incoming(interaction: Any, command: str, *, channel_name: str) -> IncomingMessage:
    """A button press (a component interaction) as the presser's own message saying `command`: their id, name
    and roles, in the channel or thread of the message the button is under, replying to that message."""
    chat_id, thread_id, _ = location(interaction)
    user = interaction.user
    return IncomingMessage(
        channel=channel_name,
        chat_id=chat_id,
        thread_id=thread_id,
        user_id=str(user.id),
        user_name=user.name,
        parts=[TextPart(text=command)],
        message_id=str(interaction.message.id) if interaction.message is not None else None,
        is_direct=interaction.guild is None,
        mentioned=True,  # pressing the bot's own button addresses the bot
        groups=member_groups(interaction.guild, user),
    )


async def to_incoming(
    message: Any,
    *,
    channel_name: str,
    config: DiscordConfig,
    bot_id: int,
    inbox: Path,
    may_fetch: Callable[[str, str | None, Sequence[str]], Awaitable[bool]],
) -> IncomingMessage:
    """`may_fetch` is the channel's: an unknown sender's attachments are neither downloaded nor saved."""
    chat_id, thread_id, _ = location(message)
    parts: list[Part] = []
    text = strip_mention(message.content or "", bot_id)
    if text:
        parts.append(TextPart(text=text))
    groups = groups_of(message)
    user_id, user_name = str(message.author.id), message.author.name
    voice_flag = bool(message.flags.voice)
    attachments = list(message.attachments)
    if attachments and not await may_fetch(user_id, user_name, groups):
        parts += [withheld(f"attachment {a.filename or 'attachment'}") for a in attachments]
    else:
        for attachment in attachments:
            parts.append(await _attachment_part(attachment, voice_flag, config.max_attachment_bytes, inbox))
    return IncomingMessage(
        channel=channel_name,
        chat_id=chat_id,
        thread_id=thread_id,
        user_id=user_id,
        user_name=user_name,
        parts=parts,
        message_id=str(message.id),
        is_direct=message.guild is None,
        mentioned=addressed_to_bot(message, bot_id),
        groups=groups,
    )


async def _attachment_part(attachment: Any, voice_flag: bool, max_bytes: int, inbox: Path) -> Part:
    import discord

    name = attachment.filename or "attachment"
    mime = (attachment.content_type or "application/octet-stream").split(";")[0].strip()
    if attachment.size > max_bytes:
        log.warning("discord attachment %s (%d bytes) over the limit; not downloaded", name, attachment.size)
        return TextPart(text=f"[attachment {name} ({attachment.size} bytes) was too large to download]")
    try:
        data = await attachment.read()
    except (discord.HTTPException, OSError) as exc:
        log.warning("could not download discord attachment %s: %r", name, exc)
        return TextPart(text=f"[attachment {name} could not be downloaded]")
    voice = attachment.is_voice_message() or (voice_flag and mime.startswith("audio/"))
    if voice or mime.startswith("audio/"):
        return AudioPart(
            data=data,
            mime=mime if mime.startswith("audio/") else "audio/ogg",
            duration_s=attachment.duration,
            voice_note=voice,
        )
    if mime.startswith("image/"):
        return ImagePart(data=data, mime=mime)
    # A time prefix keeps the inbox in arrival order.
    prefix = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    path = await asyncio.to_thread(lambda: save_to_inbox(inbox, name, data=data, prefix=prefix))
    return FilePart(name=name, mime=mime, path=str(path))
