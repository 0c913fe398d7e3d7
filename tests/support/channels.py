"""A fake in-memory channel for gateway tests: records every platform call with its (virtual) time.

It can be told to raise on upcoming calls (`fail("edit", RetryAfter(3))`), to hang (`hang_all`,
`hang_chats`, released by `release.set()`), to fail its first starts (`fail_starts`), and tests can wait
on what it recorded (`await ch.wait_for(lambda: ...)`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from operator_use.channels.base import Capabilities, Channel, ChannelConfig, ChannelError, Refused, TooLong
from operator_use.gateway.clock import Clock
from operator_use.gateway.splitting import measure
from operator_use.messages import Address, Part


@dataclass
class Call:
    kind: str  # "send" | "edit" | "typing" | "finalize" | "send_parts"
    at: float  # clock time when the call was made
    address: Address
    text: str | None = None
    message_id: str | None = None
    reply_to: str | None = None
    error: BaseException | None = None  # what the call raised, if anything
    parts: list[Part] | None = None
    plain: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class RecordingChannel(Channel):
    def __init__(
        self,
        name: str = "rec",
        *,
        clock: Clock | None = None,
        can_edit: bool = True,
        max_length: int = 4096,
        edit_interval: float = 1.0,
        formatting: str = "markdown",
        fail_starts: int = 0,
    ) -> None:
        super().__init__(ChannelConfig(enabled=True, allow_from=["*"]), name=name)
        self.capabilities = Capabilities(
            can_edit=can_edit, max_length=max_length, edit_interval=edit_interval, formatting=formatting
        )
        self.clock = clock
        self.calls: list[Call] = []
        self.messages: dict[str, str] = {}  # platform id -> current text (insertion order = post order)
        self.finalized: list[str] = []  # ids passed to finalize(), in order
        self._errors: dict[str, list[BaseException]] = {}
        self._ids = itertools.count(1)
        self.hang_all = False
        self.hang_chats: set[str] = set()
        self.release = asyncio.Event()  # set it to let hanging calls through
        self.in_flight = 0  # calls currently hanging
        self.fail_starts = fail_starts
        self.start_attempts = 0
        self.stopped = False
        self._recorded = asyncio.Event()

    # --- test controls ---

    def fail(self, kind: str, *errors: BaseException) -> None:
        """Raise these, in order, on the next `kind` calls ("send", "edit", "typing", "finalize", "send_parts")."""
        self._errors.setdefault(kind, []).extend(errors)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._recorded.clear()
            await self._recorded.wait()

    def of(self, *kinds: str) -> list[Call]:
        return [c for c in self.calls if c.kind in kinds]

    @property
    def text_calls(self) -> list[Call]:
        """send + edit attempts, in order (the platform calls a stream makes)."""
        return self.of("send", "edit")

    @property
    def sent_texts(self) -> list[str]:
        """Final text of every posted message, in posting order."""
        return list(self.messages.values())

    # --- Channel ---

    async def connect(self) -> None:
        self.start_attempts += 1
        if self.start_attempts <= self.fail_starts:
            raise ChannelError(f"{self.name}: cannot connect (attempt {self.start_attempts})")

    async def disconnect(self) -> None:
        self.stopped = True

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        call = await self._call("send", address, text=text, reply_to=reply_to)
        call.plain = plain
        mid = f"{self.name}-{next(self._ids)}"
        call.message_id = mid
        self.messages[mid] = text
        return mid

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        if message_id not in self.messages:
            raise ChannelError(f"no message {message_id}", permanent=True)
        await self._call("edit", address, text=text, message_id=message_id)
        self.messages[message_id] = text

    async def typing(self, address: Address) -> None:
        await self._call("typing", address)

    async def finalize(self, address: Address, message_id: str) -> None:
        await self._call("finalize", address, message_id=message_id)
        self.finalized.append(message_id)

    async def send_parts(self, address: Address, parts: list[Part], *, reply_to: str | None = None) -> None:
        await self._call("send_parts", address, reply_to=reply_to, parts=parts)

    async def _call(self, kind: str, address: Address, **kw: object) -> Call:
        call = Call(kind=kind, at=self.clock.now() if self.clock else 0.0, address=address, **kw)  # type: ignore[arg-type]
        self.calls.append(call)
        self._recorded.set()
        if self.hang_all or address.chat_id in self.hang_chats:
            self.in_flight += 1
            try:
                await self.release.wait()
            finally:
                self.in_flight -= 1
        queued = self._errors.get(kind)
        if queued:
            call.error = queued.pop(0)
            raise call.error
        return call


class PickyChannel(RecordingChannel):
    """A RecordingChannel whose platform judges what it gets: over `platform_limit` in `platform_unit` it
    answers TooLong (whatever the channel declares), and a text that `refuse` matches it answers Refused
    with `reason`, offering `reword(text)` (when given) as a rewording."""

    def __init__(
        self,
        name: str = "picky",
        *,
        platform_limit: int,
        platform_unit: str = "utf16",
        refuse: Callable[[str], bool] | None = None,
        reason: str = "not allowed here",
        reword: Callable[[str], str] | None = None,
        **kw: object,
    ) -> None:
        super().__init__(name, **kw)  # type: ignore[arg-type]
        self.platform_limit, self.platform_unit = platform_limit, platform_unit
        self.refuse, self.reason, self.reword = refuse, reason, reword

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        self._judge("send", text)
        return await super().send(address, text, reply_to=reply_to, plain=plain)

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        self._judge("edit", text)
        await super().edit(address, message_id, text, plain=plain)

    def _judge(self, kind: str, text: str) -> None:
        if measure(text, self.platform_unit) > self.platform_limit:  # type: ignore[arg-type]
            self.fail(kind, TooLong())
        elif self.refuse is not None and self.refuse(text):
            self.fail(kind, Refused(self.reason, resend=self.reword(text) if self.reword else None))
