"""The channel contract.

A channel is a thin translation between one platform and our messages. It turns platform events into
`IncomingMessage`s (handed to `publish`) and performs a few primitive actions for the gateway. It does
not stream, split, retry or authorize: the gateway and the orchestrator do that once for every platform.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..messages import Address, AudioPart, IncomingMessage, Part

log = logging.getLogger(__name__)

Publish = Callable[[IncomingMessage], Awaitable[None]]


class ChannelError(Exception):
    """A platform refused an action. `permanent` errors are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class RetryAfter(ChannelError):
    """The platform asked us to wait (HTTP 429 / flood control) before the next call."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"retry after {seconds}s")
        self.seconds = max(0.0, float(seconds))


class NotModified(ChannelError):
    """An edit that changed nothing ("message is not modified"): treated as success by the gateway."""


class FormattingRejected(ChannelError):
    """The platform could not parse our formatted text; the gateway resends it as plain text."""


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    can_edit: bool = True
    max_length: int = 4096
    # Minimum seconds between two edits of the same message.
    edit_interval: float = 1.0
    voice: bool = False
    threads: bool = False
    # "markdown" (CommonMark as the model writes it), "telegram_html", "slack_mrkdwn", "discord", "plain"
    formatting: str = "plain"
    # (messages, seconds): at most that many sends/edits per chat (all its threads) in any such window;
    # the gateway makes later calls wait, it never drops them. None: no limit of our own.
    rate_limit: tuple[int, float] | None = None
    # Every message of a reply cut into several answers the question, not only the first (chats where
    # answers to different people interleave).
    reply_each_chunk: bool = False


class ChannelConfig(BaseModel):
    """Settings every channel shares; each platform subclasses it with its own fields."""

    enabled: bool = False
    # Deny by default: user ids or names allowed to talk to the agent; ["*"] opens the channel.
    allow_from: list[str] = Field(default_factory=list)
    # Users allowed to run admin commands such as /restart.
    admins: list[str] = Field(default_factory=list)
    # Overrides the channel's own minimum seconds between edits.
    edit_interval: float | None = None
    # Text sent to a sender who is not allowed; None sends nothing.
    rejection_message: str | None = None
    # An unknown sender in a direct chat gets a pairing code the owner can approve from the CLI.
    pairing: bool = False

    def allows(self, user_id: str, user_name: str | None = None, groups: list[str] | tuple[str, ...] = ()) -> bool:
        if "*" in self.allow_from:
            return True
        return (user_id in self.allow_from or (user_name is not None and user_name in self.allow_from)
                or any(g in self.allow_from for g in groups))

    def is_admin(self, user_id: str, user_name: str | None = None) -> bool:
        return user_id in self.admins or (user_name is not None and user_name in self.admins)


class Channel(abc.ABC):
    """Base class for every platform. Subclasses set `name` and `capabilities` and implement the
    primitives below; `start` must return once the channel is receiving (or raise)."""

    name: ClassVar[str] = "channel"
    capabilities: Capabilities = Capabilities()

    def __init__(self, config: ChannelConfig | None = None, *, name: str | None = None) -> None:
        self.config = config or ChannelConfig(enabled=True)
        if name:
            self.name = name  # type: ignore[misc]
        self._publish: Publish | None = None
        if self.config.edit_interval is not None:
            self.capabilities = self.capabilities.model_copy(update={"edit_interval": self.config.edit_interval})

    # --- lifecycle ---

    async def start(self, publish: Publish) -> None:
        self._publish = publish
        await self.connect()

    async def stop(self) -> None:
        await self.disconnect()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect to the platform and begin delivering messages through `self.emit`."""

    async def disconnect(self) -> None:
        return None

    async def emit(self, message: IncomingMessage) -> None:
        """Hand a platform message to the pipeline (waits when the bus is full: back-pressure)."""
        if self._publish is None:
            raise RuntimeError(f"channel {self.name} emitted before start()")
        await self._publish(message)

    # --- primitives used by the gateway ---

    # `plain=True`: the text is not in the platform's markup (a resend after FormattingRejected):
    # send it without a parse mode.
    @abc.abstractmethod
    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        """Post a new text message; return its platform id."""

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        raise ChannelError(f"{self.name} cannot edit messages", permanent=True)

    async def typing(self, address: Address) -> None:
        return None

    async def finalize(self, address: Address, message_id: str) -> None:
        """The streamed message `message_id` is complete (its last edit was made). Optional."""
        return None

    async def send_parts(self, address: Address, parts: list[Part], *, reply_to: str | None = None) -> None:
        """Non-text parts (files, images, voice). The default describes what it could not send."""
        for part in parts:
            if isinstance(part, AudioPart) and self.capabilities.voice:
                await self.send_voice(address, part, reply_to=reply_to)
            elif not hasattr(part, "text"):
                log.warning("%s cannot send %s parts; dropped", self.name, part.type)

    async def send_voice(self, address: Address, audio: AudioPart, *, reply_to: str | None = None) -> str:
        raise ChannelError(f"{self.name} cannot send voice", permanent=True)

    def format(self, markdown: str) -> str:
        """Render the model's markdown in the platform's dialect (`capabilities.formatting`)."""
        if self.capabilities.formatting in ("markdown", "discord"):
            return markdown
        from ..gateway.formatting import render_markdown

        return render_markdown(markdown, self.capabilities.formatting)

    def status(self) -> str:
        """One word for /status: "up", "reconnecting", ..."""
        return "up"
