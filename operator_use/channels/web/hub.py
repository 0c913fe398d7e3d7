"""What the HTTP server needs from the web channel: the server depends on this, not on the channel module,
so the channel can import the server without a circle."""

from __future__ import annotations

from typing import Any, Protocol

from .config import WebConfig


class ChatHub(Protocol):
    web_config: WebConfig
    token: str

    @property
    def port(self) -> int: ...

    async def attach(self, chat: str, ws: Any) -> None:
        """A tab opened `chat`: send it the history, then every event of that conversation."""

    def detach(self, chat: str, ws: Any) -> None: ...

    async def receive(self, chat: str, text: str) -> None: ...

    async def receive_audio(self, chat: str, data: bytes, mime: str) -> None: ...
