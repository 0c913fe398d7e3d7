"""Per-turn context: who is talking, where, in which session.

It is passed explicitly to every tool call and also published through a contextvar, so code deep in a
call stack can find the turn it serves. It is never stored on a shared object: two chats run their
turns concurrently and each sees only its own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..messages import Address, CloseButtons, OutgoingMessage

SendText = Callable[[str], Awaitable[None]]
SendMessage = Callable[[OutgoingMessage | CloseButtons], Awaitable[None]]


@dataclass(frozen=True)
class TurnContext:
    address: Address
    user_id: str
    session_key: str
    workspace: Path
    user_name: str | None = None
    is_admin: bool = False
    turn_id: str = ""
    # Posts a message to this turn's chat (used by tools such as send_message).
    send_text: SendText | None = None
    # Posts a whole message to this turn's chat, buttons included (an approval request's Approve/Deny), or
    # closes the buttons of one sent before (CloseButtons).
    send_message: SendMessage | None = None
    # The user's message was a voice note (transcribed): in "auto" voice mode the reply is spoken too.
    spoken: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return self.address.channel

    @property
    def chat_id(self) -> str:
        return self.address.chat_id


current_turn: contextvars.ContextVar[TurnContext | None] = contextvars.ContextVar("current_turn", default=None)
