"""The gateway: starts the channels and delivers everything the agents put on the outgoing bus.

Isolation is the point of its shape. Outgoing items are routed by channel and then by chat into *lanes*:
one queue and one worker per chat, created on demand and retired when idle. A chat's messages stay in
order, while a slow chat, or a platform whose calls hang, only ever holds up its own lane: the
dispatcher never awaits a platform call, so other chats and other channels keep flowing.

Channels that fail to start are retried in the background with exponential backoff; the others run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..bus.base import Bus, OutboundItem
from ..channels.base import Channel, ChannelError, FormattingRejected, NotModified, Refused, RetryAfter, TooLong
from ..messages import (
    Address,
    Button,
    CloseButtons,
    OutgoingMessage,
    Part,
    StreamBlockEnd,
    StreamDelta,
    StreamDone,
    StreamStart,
    TextPart,
    Typing,
)
from .clock import Clock, RealClock
from .splitting import measure, split_markdown
from .stream_editor import StreamEditor
from .tasks import TaskSet

log = logging.getLogger(__name__)

_STREAM_EVENTS = (StreamStart, StreamDelta, StreamBlockEnd, StreamDone)
# Messages sent with buttons, remembered so a CloseButtons can find them (the oldest forgotten first).
_REMEMBERED_BUTTONS = 1000


@dataclass(frozen=True)
class _WithButtons:
    message_id: str
    text: str  # the chunk as given, before formatting
    commands: tuple[str, ...]


@dataclass(eq=False)
class _Lane:
    queue: asyncio.Queue[OutboundItem] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class Gateway:
    def __init__(
        self,
        bus: Bus,
        channels: list[Channel],
        clock: Clock | None = None,
        start_retry_base: float = 1.0,
        start_retry_max: float = 60.0,
        *,
        editor: StreamEditor | None = None,
        typing_interval: float = 4.0,
        typing_max: float = 300.0,
        max_send_retries: int = 5,
        start_wait: float = 30.0,
    ) -> None:
        self.bus = bus
        self.clock: Clock = clock or RealClock()
        self.channels: dict[str, Channel] = {ch.name: ch for ch in channels}
        if len(self.channels) != len(channels):
            raise ValueError("two channels share a name")
        self.editor = editor or StreamEditor(self.clock)
        self.start_retry_base = start_retry_base
        self.start_retry_max = start_retry_max
        self.typing_interval = typing_interval
        self.typing_max = typing_max  # a refresher whose stop signal never comes still ends
        self.max_send_retries = max_send_retries
        self.start_wait = start_wait
        self._state: dict[str, str] = dict.fromkeys(self.channels, "down")
        # Channels that can never start as configured (state "failed"), with why: `operator-use run` stops on them.
        self.failures: dict[str, str] = {}
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._typing: dict[str, asyncio.Task[None]] = {}
        self._with_buttons: OrderedDict[tuple[str, str], _WithButtons] = OrderedDict()  # (chat key, command)
        self._tasks = TaskSet("gateway")  # dispatcher, channel starters
        self._lane_tasks = TaskSet("gateway-lane")
        self._typing_tasks = TaskSet("gateway-typing")
        self._dispatcher: asyncio.Task[None] | None = None
        # Told, for each message with attachments (voice notes, files), once they were delivered (None) or
        # given up on (why): the voice service tells the user once when voice notes cannot be sent.
        self.on_parts_sent: list[Callable[[OutgoingMessage, str | None], Awaitable[None]]] = []

    # --- lifecycle ---

    async def start(self) -> None:
        """Start every channel concurrently and the outbound dispatcher. Returns once each channel has
        made its first attempt; failed ones keep retrying in the background."""
        first_attempts = [asyncio.Event() for _ in self.channels]
        for ch, attempted in zip(self.channels.values(), first_attempts, strict=False):
            self._state[ch.name] = "starting"
            self._tasks.spawn(self._keep_starting(ch, attempted), name=f"start-{ch.name}")
        self._dispatcher = self._tasks.spawn(self._dispatch(), name="gateway-dispatch")
        # A channel whose start() hangs must not hold up the app: stop waiting after start_wait.
        attempts: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in first_attempts)))
        deadline: asyncio.Future[Any] = asyncio.ensure_future(self.clock.sleep(self.start_wait))
        try:
            await asyncio.wait({attempts, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            attempts.cancel()
            deadline.cancel()
            await asyncio.gather(attempts, deadline, return_exceptions=True)
        if any(state == "starting" for state in self._state.values()):
            log.warning("gateway started; still starting: %s", [n for n, st in self._state.items() if st == "starting"])

    async def stop(self, grace: float = 5.0) -> None:
        """Stop dispatching, let lanes finish what is queued (up to `grace` real seconds), cancel the
        rest, then stop the channels (each given `grace`). Real seconds, not the clock: shutdown must be
        bounded even when nothing advances a fake clock."""
        await self._tasks.cancel_all()  # dispatcher and pending start retries
        self._dispatcher = None
        lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if lanes:
            _, pending = await asyncio.wait(lanes, timeout=grace)
            if pending:
                log.warning("gateway stop: %d chat lane(s) still busy, cancelled", len(pending))
        await self._lane_tasks.cancel_all()
        self._lanes.clear()
        await self._typing_tasks.cancel_all()
        self._typing.clear()
        await self.editor.aclose()
        # "starting" too: a start cancelled half-way may hold a connection that disconnect() releases.
        live = [ch for ch in self.channels.values() if self._state[ch.name] in ("up", "starting")]
        results = await asyncio.gather(*(asyncio.wait_for(ch.stop(), grace) for ch in live), return_exceptions=True)
        for ch, res in zip(live, results, strict=False):
            if isinstance(res, BaseException):
                log.error("channel %s failed to stop cleanly", ch.name, exc_info=res)
        for name in self.channels:
            self._state[name] = "down"

    def status(self) -> dict[str, str]:
        """Per channel: "starting", "down", or once up the channel's own status ("up", "reconnecting"...)."""
        out: dict[str, str] = {}
        for name, ch in self.channels.items():
            state = self._state[name]
            if state == "up":
                try:
                    state = ch.status() or "up"
                except Exception:
                    log.exception("channel %s status() failed", name)
            out[name] = state
        return out

    def queued(self) -> dict[str, int]:
        """Per chat with a live lane: outgoing items not yet delivered (`operator-use status`)."""
        return {key: lane.queue.qsize() for (_, key), lane in self._lanes.items()}

    async def _keep_starting(self, ch: Channel, attempted: asyncio.Event) -> None:
        delay = self.start_retry_base
        while True:
            self._state[ch.name] = "starting"
            try:
                await ch.start(self.bus.publish_incoming)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a platform library's own errors, or our own
                hint = await asyncio.to_thread(_missing_extra, e) if isinstance(e, ModuleNotFoundError) else None
                if hint is not None:
                    # A missing SDK does not come back by waiting: say how to install it once, never retry.
                    self._fail(ch.name, hint, attempted)
                    return
                if isinstance(e, ChannelError) and e.permanent:
                    # A port in use, a setting that cannot work: waiting does not change it, so say it once.
                    self._fail(ch.name, str(e), attempted)
                    return
                self._state[ch.name] = "down"
                attempted.set()
                if isinstance(e, ModuleNotFoundError):
                    # Not an optional extra left out: a submodule missing inside an installed SDK, or a bug in
                    # our own imports. Its traceback is what finds it.
                    log.exception("channel %s failed to start; retrying in %.1fs", ch.name, delay)
                else:
                    log.warning("channel %s failed to start (%r); retrying in %.1fs", ch.name, e, delay)
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.start_retry_max)
                continue
            self._state[ch.name] = "up"
            attempted.set()
            log.info("channel %s up", ch.name)
            return

    def _fail(self, name: str, why: str, attempted: asyncio.Event) -> None:
        self._state[name] = "failed"
        self.failures[name] = why
        attempted.set()
        log.error("channel %s cannot start: %s", name, why)

    # --- routing ---

    async def _dispatch(self) -> None:
        while True:
            item = await self.bus.next_outgoing()
            try:
                self.route(item)
            except Exception:
                log.exception("could not route %s", type(item).__name__)

    def route(self, item: OutboundItem) -> None:
        """Hand one outgoing item to its chat's lane (never waits: lanes are unbounded queues)."""
        ch = self.channels.get(item.address.channel)
        if ch is None:
            log.warning("outgoing %s for unknown channel %r dropped", item.kind, item.address.channel)
            return
        key = (ch.name, item.address.key)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.task = self._lane_tasks.spawn(self._lane_worker(key, lane, ch), name=f"lane-{item.address.key}")
        lane.queue.put_nowait(item)

    async def _lane_worker(self, key: tuple[str, str], lane: _Lane, ch: Channel) -> None:
        try:
            while True:
                item = lane.queue.get_nowait() if not lane.queue.empty() else None
                if item is None:
                    return  # idle: retire; the next item for this chat starts a new lane
                try:
                    await self._deliver(ch, item)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("delivering %s to %s failed", item.kind, item.address.key)
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _deliver(self, ch: Channel, item: OutboundItem) -> None:
        if isinstance(item, Typing):
            # Queued like the rest: an older reply still being sent must not stop a newer typing indicator.
            self._set_typing(ch, item.address, item.active)
        elif isinstance(item, OutgoingMessage):
            self._set_typing(ch, item.address, False)
            await self._send_message(ch, item)
        elif isinstance(item, CloseButtons):
            await self._close_buttons(ch, item)
        elif isinstance(item, _STREAM_EVENTS):
            if isinstance(item, StreamDone):
                self._set_typing(ch, item.address, False)
            await self.editor.handle(ch, item)

    # --- whole messages ---

    async def _send_message(self, ch: Channel, msg: OutgoingMessage) -> None:
        caps = ch.capabilities
        reply_to = msg.reply_to
        text = msg.text
        limit = caps.max_length
        pending = split_markdown(text, limit, caps.length_unit) if text.strip() else []
        # Buttons go under the last chunk (the end of the text they answer), on channels that show them.
        buttons = msg.buttons if caps.buttons else []
        if msg.buttons and not pending:
            log.warning("%s: a message with buttons but no text; buttons dropped", ch.name)
        undelivered, reasons = 0, []
        while pending:
            chunk = pending.pop(0)
            if measure(chunk, caps.length_unit) > limit:  # cut before `limit` was lowered
                pending[:0] = split_markdown(chunk, limit, caps.length_unit)
                continue
            last = buttons if not pending else []
            try:
                if await self._send_text(ch, msg.address, chunk, reply_to, last) and not caps.reply_each_chunk:
                    reply_to = None  # only the first chunk replies
                if not pending:
                    buttons = []
                continue
            except TooLong as e:
                # The platform counts more than we do: cut at 3/4 of what it refused, the rest of the message too.
                smaller = min(limit, measure(chunk, caps.length_unit)) * 3 // 4
                if smaller >= max(1, caps.max_length // 16):
                    log.warning("%s: %s; cutting at %d %s", ch.name, e, smaller, caps.length_unit)
                    limit = smaller
                    pending.insert(0, chunk)
                    continue
                reason = f"too long for {ch.name}"
            except Refused as e:
                reason = e.reason
            log.warning("%s refused %d characters of a message (%s); going on", ch.name, len(chunk), reason)
            undelivered += len(chunk)
            reasons.append(reason)
        if undelivered:
            notice = f"({undelivered} characters could not be delivered: {'; '.join(dict.fromkeys(reasons))})"
            try:
                # The last chunk was refused: the buttons it carried go under the notice instead.
                await self._send_text(ch, msg.address, notice, reply_to, buttons)
            except ChannelError as e:
                log.error("%s: could not tell the user about undelivered text: %s", ch.name, e)
        others: list[Part] = [p for p in msg.parts if not isinstance(p, TextPart)]
        if others:
            failures: list[str] = []

            async def send_parts() -> None:
                await self.editor.limiter.acquire(ch, msg.address)
                try:
                    await ch.send_parts(msg.address, others, reply_to=reply_to)
                except RetryAfter:
                    raise
                except Exception as e:
                    failures.append(str(e) or type(e).__name__)
                    raise

            sent = await self._retrying(send_parts, what=f"{ch.name} send_parts")
            problem = None if sent else failures[-1] if failures else "still rate limited"
            for hook in self.on_parts_sent:
                try:
                    await hook(msg, problem)
                except Exception:
                    log.exception("%s: a hook on sent attachments failed", ch.name)

    async def _send_text(
        self, ch: Channel, address: Address, chunk: str, reply_to: str | None, buttons: list[Button] | None = None
    ) -> bool:
        """Send one chunk (with `buttons` under it, through `send_buttons`): as plain text after
        FormattingRejected, reworded once after a Refused that offers a rewording. True once sent; TooLong and
        Refused reach the caller, which knows the rest of the text."""
        sent: list[str] = []
        refusals = (TooLong, Refused)
        plain = False

        async def send(text: str, plain: bool) -> None:
            await self.editor.limiter.acquire(ch, address)  # the chat's rate limit, shared with streams
            if buttons and not plain:
                sent.append(await ch.send_buttons(address, text, buttons, reply_to=reply_to))
                self._remember_buttons(address, sent[-1], chunk, buttons)
            else:
                # send_buttons takes formatted text only: plain text goes without them (it names the commands).
                if buttons:
                    log.warning("%s: buttons dropped from a message resent as plain text", ch.name)
                sent.append(await ch.send(address, text, reply_to=reply_to, plain=plain))

        try:
            formatted = ch.format(chunk)
        except Exception:
            log.exception("%s.format failed; sending raw text", ch.name)
            formatted = chunk
        what = f"{ch.name} send"
        try:
            try:
                ok = await self._retrying(
                    lambda: send(formatted, False), what=what, reraise=(FormattingRejected, *refusals)
                )
            except FormattingRejected:
                log.warning("%s rejected formatting; resending as plain text", ch.name)
                plain = True
                ok = await self._retrying(lambda: send(chunk, True), what=what, reraise=refusals)
        except Refused as e:
            if not e.resend:
                raise
            log.info("%s refused a message (%s); sending it reworded", ch.name, e.reason)
            reworded = e.resend
            ok = await self._retrying(lambda: send(reworded, plain), what=what, reraise=refusals)
        finally:
            if sent:
                # A whole message never changes after it is sent.
                try:
                    await ch.finalize(address, sent[-1])
                except Exception as e:  # noqa: BLE001 — a platform library's own errors
                    log.warning("%s: finalize of message %s failed: %r", ch.name, sent[-1], e)
        return ok

    # --- buttons ---

    def _remember_buttons(self, address: Address, message_id: str, chunk: str, buttons: list[Button]) -> None:
        entry = _WithButtons(message_id, chunk, tuple(b.command for b in buttons))
        for command in entry.commands:
            self._with_buttons[(address.key, command)] = entry
            self._with_buttons.move_to_end((address.key, command))
        while len(self._with_buttons) > _REMEMBERED_BUTTONS:
            self._with_buttons.popitem(last=False)

    async def _close_buttons(self, ch: Channel, item: CloseButtons) -> None:
        """Take the buttons off the message that carries one of `item.commands`, its note under the text."""
        key = item.address.key
        entry = next((e for c in item.commands if (e := self._with_buttons.get((key, c))) is not None), None)
        if entry is None:
            return  # never sent with buttons here (a channel without them), or long forgotten
        for command in entry.commands:
            self._with_buttons.pop((key, command), None)
        if type(ch).close_buttons is Channel.close_buttons:
            return  # the channel leaves its messages as they are: no call, no rate-limit slot
        caps = ch.capabilities
        text = f"{entry.text}\n\n{item.note}" if item.note else entry.text
        if measure(text, caps.length_unit) > caps.max_length:
            text = entry.text  # no room for the note: the buttons go all the same
        try:
            formatted = ch.format(text)
        except Exception:
            log.exception("%s.format failed; closing buttons with raw text", ch.name)
            formatted = text

        async def close() -> None:
            await self.editor.limiter.acquire(ch, item.address)
            await ch.close_buttons(item.address, entry.message_id, formatted)

        try:
            await self._retrying(close, what=f"{ch.name} close_buttons", reraise=(NotModified, Refused))
        except (NotModified, Refused) as e:
            # Deleted or no longer editable: a late press still gets the command's own answer.
            log.info("%s: buttons of message %s left as they are: %s", ch.name, entry.message_id, e)

    async def _retrying(
        self, call: Callable[[], Awaitable[Any]], *, what: str, reraise: tuple[type[ChannelError], ...] = ()
    ) -> bool:
        """Run a platform call, honouring RetryAfter; log (never raise) other channel errors, except
        the `reraise` ones the caller handles."""
        for _ in range(self.max_send_retries):
            try:
                await call()
                return True
            except reraise:
                raise
            except RetryAfter as e:
                log.info("%s: retry after %.1fs", what, e.seconds)
                await self.clock.sleep(e.seconds)
            except FormattingRejected:
                log.error("%s: formatting rejected even as plain text; dropped", what)
                return False
            except ChannelError as e:
                log.error("%s failed: %s", what, e)
                return False
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", what)
                return False
        log.error("%s: still rate limited after %d tries; dropped", what, self.max_send_retries)
        return False

    # --- typing ---

    def _set_typing(self, ch: Channel, address: Address, active: bool) -> None:
        key = address.key
        current = self._typing.pop(key, None)
        if current is not None:
            current.cancel()
        if active:
            self._typing[key] = self._typing_tasks.spawn(self._refresh_typing(ch, address), name=f"typing-{key}")

    async def _refresh_typing(self, ch: Channel, address: Address) -> None:
        # Platforms show "typing…" for ~5 s per call: refresh until told to stop (or typing_max passes).
        started = self.clock.now()
        try:
            while self.clock.now() - started < self.typing_max:
                try:
                    await ch.typing(address)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 — a lost typing indicator is not worth more than a debug line
                    log.debug("%s typing failed: %r", ch.name, e)
                await self.clock.sleep(self.typing_interval)
        finally:
            if self._typing.get(address.key) is asyncio.current_task():
                del self._typing[address.key]


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The install hint when `exc` is an optional extra left out: its top-level module is one a channel's
    extra provides (channels/registry.py `NEEDS`) and really is not installed. None for anything else.
    Sync (find_spec looks at the disk): run in a thread."""
    from ..channels.registry import extra_for_module, install_command, installed

    name = exc.name or ""
    found = extra_for_module(name)
    if found is None or installed(name.split(".")[0]):
        return None
    return f"module {name} is not installed; install it: {install_command([found[1]])}"
