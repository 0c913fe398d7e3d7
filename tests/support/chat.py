"""A channel for end-to-end tests: inject messages as users, observe what the gateway does with them.

It implements the same contract as every platform adapter (send/edit/typing/finalize), so a test drives
the real pipeline: channel -> bus -> orchestrator -> agent -> bus -> gateway -> channel.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from operator_use.channels.base import Capabilities, Channel, ChannelConfig
from operator_use.messages import Address, AudioPart, IncomingMessage, Part, TextPart

from .waiting import Observable


@dataclass
class Posted:
    id: str
    address: Address
    text: str
    reply_to: str | None
    edits: list[str] = field(default_factory=list)
    finalized: bool = False


class ChatChannel(Observable, Channel):
    name = "test"
    capabilities = Capabilities(can_edit=True, max_length=4096, edit_interval=0.0, formatting="markdown")

    def __init__(self, config: ChannelConfig | None = None, *, name: str = "test", voice: bool = False) -> None:
        super().__init__(
            config or ChannelConfig(enabled=True, allow_from=["alice", "bob"], admins=["alice"]), name=name
        )
        if voice:
            self.capabilities = self.capabilities.model_copy(update={"voice": True})
        self.posted: list[Posted] = []
        # (address, audio, reply_to) of every voice note sent
        self.voices: list[tuple[Address, AudioPart, str | None]] = []
        self.typing_calls: list[Address] = []
        self._changed = asyncio.Condition()
        self._seq = 0

    async def connect(self) -> None:
        return None

    # --- driving ---

    async def say(
        self,
        text: str,
        *,
        user: str = "alice",
        chat: str = "c1",
        thread: str | None = None,
        parts: list[Part] | None = None,
    ) -> IncomingMessage:
        self._seq += 1
        message = IncomingMessage(
            channel=self.name,
            chat_id=chat,
            thread_id=thread,
            user_id=user,
            user_name=user,
            parts=parts if parts is not None else [TextPart(text=text)],
            message_id=f"in{self._seq}",
        )
        await self.emit(message)
        return message

    # --- observing ---

    def in_chat(self, chat: str = "c1", thread: str | None = None) -> list[Posted]:
        return [p for p in self.posted if p.address.chat_id == chat and p.address.thread_id == thread]

    def texts(self, chat: str = "c1", thread: str | None = None) -> list[str]:
        return [p.text for p in self.in_chat(chat, thread)]

    def finalized(self, chat: str = "c1", thread: str | None = None) -> list[Posted]:
        return [p for p in self.in_chat(chat, thread) if p.finalized]

    # --- the channel contract ---

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        posted = Posted(id=f"m{len(self.posted) + 1}", address=address, text=text, reply_to=reply_to)
        self.posted.append(posted)
        await self._notify()
        return posted.id

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        posted = next(p for p in self.posted if p.id == message_id)
        posted.text = text
        posted.edits.append(text)
        await self._notify()

    async def finalize(self, address: Address, message_id: str) -> None:
        next(p for p in self.posted if p.id == message_id).finalized = True
        await self._notify()

    async def typing(self, address: Address) -> None:
        self.typing_calls.append(address)

    async def send_voice(self, address: Address, audio: AudioPart, *, reply_to: str | None = None) -> str:
        self.voices.append((address, audio, reply_to))
        await self._notify()
        return f"v{len(self.voices)}"
