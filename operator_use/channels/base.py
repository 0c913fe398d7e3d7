"""The channel contract.

A channel is a thin translation between one platform and our messages. It turns platform events into
`IncomingMessage`s (handed to `publish`) and performs a few primitive actions for the gateway. It does
not stream, split, retry or authorize: the gateway and the orchestrator do that once for every platform.
"""

from __future__ import annotations

import abc
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config_model import StrictModel
from ..messages import Address, AudioPart, Button, IncomingMessage, Part, TextPart

log = logging.getLogger(__name__)

Publish = Callable[[IncomingMessage], Awaitable[None]]
# (channel name, user id) -> may this sender talk to the agent, beyond the channel's own config? The App sets it
# to what the orchestrator also consults: approved pairing identities and registered users (security/access.py).
Knows = Callable[[str, str], Awaitable[bool]]


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


class TooLong(ChannelError):
    """The platform counted the text as over its length limit: the gateway cuts it smaller and goes on."""

    def __init__(self, message: str = "message is too long") -> None:
        super().__init__(message, permanent=True)


class Refused(ChannelError):
    """The platform would not post this one message (a duplicate, AutoMod, a content rule). The gateway goes
    on with the rest of the reply and tells the user how much could not be delivered, and why (`reason`,
    words for the user). `resend`: the same message reworded so the platform takes it, tried once."""

    def __init__(self, reason: str, *, resend: str | None = None) -> None:
        super().__init__(reason, permanent=True)
        self.reason = reason
        self.resend = resend


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    can_edit: bool = True
    max_length: int = 4096
    # How the platform counts max_length: "chars" (code points), "utf16" (UTF-16 code units: an emoji
    # outside the BMP counts 2) or "bytes" (UTF-8).
    length_unit: Literal["chars", "utf16", "bytes"] = "chars"
    # Minimum seconds between two edits of the same message.
    edit_interval: float = 1.0
    voice: bool = False
    threads: bool = False
    # "markdown" (CommonMark as the model writes it), "telegram_html", "slack_mrkdwn", "discord", "plain"
    formatting: str = "plain"
    # (messages, seconds): at most that many sends/edits per chat (all its threads) in any such window;
    # the gateway makes later calls wait, it never drops them. None: no limit of our own.
    rate_limit: tuple[int, float] | None = None
    # (messages, seconds) for all chats together, in addition to rate_limit: platforms that count what one
    # account sends wherever it goes (Twitch chat). None: no such limit.
    account_rate_limit: tuple[int, float] | None = None
    # Every message of a reply cut into several answers the question, not only the first (chats where
    # answers to different people interleave).
    reply_each_chunk: bool = False
    # False: the platform shows a message on one line, line breaks and runs of spaces collapsed (Twitch
    # chat). Approval requests then show a command's newlines, tabs and spaces as visible marks.
    multiline: bool = True
    # The channel can show `Button`s under a message (`send_buttons`); a press arrives as the presser's message.
    buttons: bool = False


class ChannelConfig(StrictModel):
    """Settings every channel shares; each platform subclasses it with its own fields."""

    # Platforms whose user ids are numbers (Telegram, Discord, Twitch): an `allow_from`/`admins` entry that
    # is not one is most likely a name, which those lists no longer match; it is warned about at load.
    numeric_ids: ClassVar[bool] = False

    enabled: bool = False
    # Deny by default: platform user ids allowed to talk to the agent, and platform groups of the sender
    # ("role:<id>", "guild:<id>"); ["*"] opens the channel. Ids only: on Discord and Twitch anyone can pick a
    # name that reads like someone's id.
    allow_from: list[str] = Field(default_factory=list)
    # Users allowed to run admin commands such as /restart, by platform user id.
    admins: list[str] = Field(default_factory=list)
    # Allowed, or admins, by name (Telegram @username, Discord username, Twitch login; any case, "@" optional).
    # A separate list because names can be changed, and a freed name taken over by someone else.
    allow_names: list[str] = Field(default_factory=list)
    admin_names: list[str] = Field(default_factory=list)
    # Overrides the channel's own minimum seconds between edits.
    edit_interval: float | None = None
    # Text sent to a sender who is not allowed; None sends nothing.
    rejection_message: str | None = None
    # An unknown sender in a direct chat gets a pairing code the owner can approve from the CLI.
    pairing: bool = False

    @field_validator("allow_from", "admins")
    @classmethod
    def _strip_ids(cls, ids: list[str]) -> list[str]:
        return [i.strip() for i in ids]

    @field_validator("allow_names", "admin_names")
    @classmethod
    def _normalize_names(cls, names: list[str]) -> list[str]:
        return [name_key(n) for n in names]

    @model_validator(mode="after")
    def _warn_names_in_id_lists(self) -> ChannelConfig:
        if self.numeric_ids:
            for key in ("allow_from", "admins"):
                for entry in getattr(self, key):
                    group = key == "allow_from" and (entry == "*" or ":" in entry)
                    if not group and not _NUMERIC_ID.fullmatch(entry):
                        log.warning(
                            "channels.%s.%s: %r is not a user id (a number) and matches nobody; put names in %s",
                            type(self).__name__.removesuffix("Config").lower(),
                            key,
                            entry,
                            "allow_names" if key == "allow_from" else "admin_names",
                        )
        return self

    def allows(self, user_id: str, user_name: str | None = None, groups: list[str] | tuple[str, ...] = ()) -> bool:
        if "*" in self.allow_from or user_id in self.allow_from or any(g in self.allow_from for g in groups):
            return True
        return user_name is not None and name_key(user_name) in self.allow_names

    def is_admin(self, user_id: str, user_name: str | None = None) -> bool:
        return user_id in self.admins or (user_name is not None and name_key(user_name) in self.admin_names)


# Telegram group chats have negative ids (messaging targets may be listed in allow_from).
_NUMERIC_ID = re.compile(r"-?\d+")


class ButtonPayloads:
    """The command behind each button as a platform carries it back when the button is pressed (Telegram's
    callback_data, Slack's value, Discord's custom_id): the command itself when it `fits`, else a random key,
    the newest `keep` of them remembered. A key from before a restart, or forgotten, comes back as None."""

    KEY_PREFIX = "#"  # commands start with "/": a key never looks like one

    def __init__(self, fits: Callable[[str], bool], keep: int = 1024) -> None:
        self._fits = fits
        self._keep = keep
        self._commands: OrderedDict[str, str] = OrderedDict()

    def payload(self, command: str) -> str:
        if self._fits(command):
            return command
        key = self.KEY_PREFIX + secrets.token_urlsafe(12)
        self._commands[key] = command
        while len(self._commands) > self._keep:
            self._commands.popitem(last=False)
        return key

    def command(self, payload: str) -> str | None:
        return self._commands.get(payload) if payload.startswith(self.KEY_PREFIX) else payload


def withheld(what: str) -> TextPart:
    """What stands in a message for an attachment of an unknown sender's, never fetched (`Channel.may_fetch`)."""
    return TextPart(text=f"[{what} not downloaded: the sender is not allowed]")


def name_key(name: str) -> str:
    """A user name as compared: names on Telegram, Discord and Twitch are case-insensitive, "@" is decoration."""
    return name.strip().removeprefix("@").lower()


class Channel(abc.ABC):
    """Base class for every platform. Subclasses set `name` and `capabilities` and implement the
    primitives below; `start` must return once the channel is receiving (or raise)."""

    name: ClassVar[str] = "channel"
    capabilities: Capabilities = Capabilities()
    knows: Knows | None = None
    # The bot's own name on the platform (Telegram @username, Twitch login) once connected: a /command@name
    # addressed to another name is not run here (the orchestrator checks). None: not known.
    bot_name: str | None = None

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

    async def may_fetch(self, user_id: str, user_name: str | None = None, groups: Sequence[str] = ()) -> bool:
        """Whether this sender may talk to the agent: asked before anything they sent is downloaded or saved.
        An unknown sender's message is still emitted (the orchestrator answers and counts it), its files
        replaced by `withheld` notes: strangers cost no download, no disk and no wait for the users behind them."""
        if self.config.allows(user_id, user_name, tuple(groups)):
            return True
        return self.knows is not None and await self.knows(self.name, user_id)

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

    async def send_buttons(
        self, address: Address, text: str, buttons: list[Button], *, reply_to: str | None = None
    ) -> str:
        """Post `text` with `buttons` under it (channels with `capabilities.buttons`); return its platform id.
        A press must reach `emit` as an `IncomingMessage` from the presser whose text is the button's
        `command`. The default posts the text alone."""
        return await self.send(address, text, reply_to=reply_to)

    async def close_buttons(self, address: Address, message_id: str, text: str) -> None:
        """Take the buttons off a message sent by `send_buttons`, its text replaced by `text` (formatted, like
        what `send_buttons` got). The default leaves the message as it is: a late press then gets the
        command's own answer (such as "No pending approval")."""
        return None

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

    def rate_limits(self, address: Address) -> list[tuple[str, int, float]]:
        """The send-rate windows a call for `address` counts in, as (scope, messages, seconds), the narrowest
        first and in the same order for every address (the gateway waits for each in turn): the chat's
        `rate_limit`, then the account's `account_rate_limit`."""
        caps = self.capabilities
        limits = [(f"chat:{address.chat_id}", *caps.rate_limit)] if caps.rate_limit else []
        return limits + ([("account", *caps.account_rate_limit)] if caps.account_rate_limit else [])

    def format(self, markdown: str) -> str:
        """Render the model's markdown in the platform's dialect (`capabilities.formatting`)."""
        if self.capabilities.formatting in ("markdown", "discord"):
            return markdown
        from ..gateway.formatting import render_markdown

        return render_markdown(markdown, self.capabilities.formatting)

    def status(self) -> str:
        """One word for /status: "up", "reconnecting", ..."""
        return "up"
