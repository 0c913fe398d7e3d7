"""The generic stream editor: turns Stream* events into a few send/edit calls on any channel.

It only uses the channel primitives (`send`, `edit`, `finalize`, `format`) and `Capabilities` (can_edit, max_length,
edit_interval), and waits on a `Clock`, so one implementation serves every platform.

Editing channels: the reply is posted once there is text worth showing, then edited in place. A delta
never calls the platform itself: it appends to the buffer and wakes the stream's single flusher task,
which makes at most one call per `edit_interval` and always sends the *latest* text, so the tail is never
lost in the throttle window. Text over `max_length` is finished at a safe cut (splitting.py) and the rest
continues in a new message. RetryAfter waits and then flushes the latest text; FormattingRejected resends
the same text unformatted; NotModified is success. Once a message will not change again (cut, or the end of
the stream), the channel is told with `channel.finalize`.

Lengths are counted in the platform's unit (`Capabilities.length_unit`). When the platform still says a
message is too long (TooLong), the stream cuts at 3/4 of that length from then on and goes on. When it
refuses one message (Refused: a duplicate, AutoMod), that text is skipped (after one try of the channel's
rewording, if it offers one), the rest goes on, and a last message tells the user how many characters could
not be delivered and why. Nothing is dropped silently.

Non-editing channels (Twitch): nothing is ever edited; whole paragraphs are sent as they complete
(and the remainder at a tool call or the end), each within max_length (a longer paragraph is cut at a line
or sentence end, splitting.py), at most one send per interval. A channel's `rate_limit` is honoured per
chat across all its streams and whole messages (ratelimit.py): calls wait for a slot, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from ..channels.base import Channel, ChannelError, FormattingRejected, NotModified, Refused, RetryAfter, TooLong
from ..messages import Address, StreamBlockEnd, StreamDelta, StreamDone, StreamEvent, StreamStart
from .clock import Clock, RealClock
from .ratelimit import SendLimiter
from .splitting import ParagraphTracker, measure, split_first, trim_tail
from .tasks import TaskSet

log = logging.getLogger(__name__)


@dataclass
class EditorStats:
    """Counters over all streams (tests and the bench read them)."""

    calls: int = 0  # platform calls attempted: send + edit, failed ones included
    sends: int = 0  # successful sends
    edits: int = 0  # successful edits ("not modified" included)
    not_modified: int = 0
    retry_after: int = 0
    formatting_rejected: int = 0
    too_long: int = 0  # TooLong answers (the stream then cuts smaller)
    refused: int = 0  # Refused answers, rewordings included
    undelivered_chars: int = 0  # characters skipped after a refusal (and told to the user)
    errors: int = 0
    finalized: int = 0  # channel.finalize calls (not counted in `calls`: not a send/edit)
    streams: int = 0


class _Outcome(enum.Enum):
    SHOWN = "shown"  # the text is displayed (or nothing was needed)
    LATER = "later"  # not yet: a later tick tries again (after a wait, or cut smaller)
    REFUSED = "refused"  # the platform will not post this text: skip it, tell the user at the end


@dataclass(eq=False)
class _Stream:
    channel: Channel
    address: Address
    stream_id: str
    reply_to: str | None
    # Editing channels: the raw text of the current message. Non-editing: the text not sent yet.
    buffer: str = ""
    message_id: str | None = None  # platform id of the current message (editing channels)
    shown: str | None = None  # raw text the current message displays
    shown_out: str | None = None  # what was actually sent for it (formatted), to skip no-op edits
    messages: int = 0  # messages posted; only the first one replies to reply_to
    last_call: float = -math.inf
    retry_until: float = -math.inf
    force: bool = False  # show what there is now, even below min_chars (tool call, end of stream)
    after_block: bool = False  # the next text follows a tool call: it starts a new paragraph
    plain: bool = False  # the platform rejected our formatting: send raw text from now on
    failures: int = 0
    limit: int = 0  # max_length, lowered for this stream when the platform says a message is too long
    undelivered: int = 0  # characters the platform refused, told to the user at the end
    reasons: list[str] = field(default_factory=list)  # why, for the user; one per skipped text
    refusal: str = ""  # the reason of the last refusal
    noticed: bool = False  # the message about undelivered text was queued (there is only one)
    done: bool = False
    abandoned: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    final_call_at: float | None = None  # clock time of the last platform call (bench)
    # Non-editing channels: finds complete paragraphs in `buffer` incrementally (reset when it is cut).
    paragraphs: ParagraphTracker = field(default_factory=ParagraphTracker)


class StreamEditor:
    def __init__(
        self,
        clock: Clock | None = None,
        *,
        min_chars: int = 1,
        max_failures: int = 3,
        limiter: SendLimiter | None = None,
    ) -> None:
        self.clock: Clock = clock or RealClock()
        # Per-chat send rate limits; the gateway shares it for whole messages.
        self.limiter = limiter or SendLimiter(self.clock)
        self.min_chars = max(1, min_chars)
        self.max_failures = max(1, max_failures)
        self.stats = EditorStats()
        self._streams: dict[str, _Stream] = {}
        # Ids of finished streams, so a late event cannot reopen one as a fresh message (bounded).
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._tasks = TaskSet("stream-editor")

    # --- events ---

    async def handle(self, channel: Channel, event: StreamEvent) -> None:
        """Apply one stream event. Returns at once, except for StreamDone, which returns once the final
        text is on the platform (so the caller's next message for this chat comes after it)."""
        sid = event.stream_id
        if sid in self._closed:
            log.debug("event for closed stream %s ignored", sid)
            return
        s = self._streams.get(sid)
        if isinstance(event, StreamStart):
            if s is None:
                self._open(channel, event.address, sid, event.reply_to)
            return
        if isinstance(event, StreamDelta):
            if s is None:  # tolerate a missing StreamStart
                s = self._open(channel, event.address, sid, None)
            self._append(s, event.delta)
            return
        if s is None:
            return
        if isinstance(event, StreamBlockEnd):
            # Keep the text; show it now-ish; what follows the tool call goes after a blank line.
            s.after_block = bool(s.buffer.strip()) or s.messages > 0
            s.force = True
            s.wake.set()
        elif isinstance(event, StreamDone):
            s.done = s.force = True
            s.wake.set()
            if s.task is not None:
                # asyncio.wait, not await: if our caller is cancelled (gateway stop), the flusher is not.
                await asyncio.wait({s.task})

    def active(self) -> int:
        return len(self._streams)

    async def aclose(self) -> None:
        """Cancel every flusher (gateway stop)."""
        await self._tasks.cancel_all()
        self._streams.clear()

    # --- internals ---

    def _open(self, channel: Channel, address: Address, sid: str, reply_to: str | None) -> _Stream:
        s = _Stream(
            channel=channel, address=address, stream_id=sid, reply_to=reply_to, limit=channel.capabilities.max_length
        )
        self._streams[sid] = s
        self.stats.streams += 1
        s.task = self._tasks.spawn(self._run(s), name=f"stream-{sid}")
        return s

    def _append(self, s: _Stream, delta: str) -> None:
        if not delta:
            return
        if s.after_block:
            if s.buffer.strip():
                delta = delta.lstrip("\n")
                if not delta:
                    return  # wait for real text before adding the separator
                sep = "" if s.buffer.endswith("\n\n") else "\n" if s.buffer.endswith("\n") else "\n\n"
                s.buffer += sep
            s.after_block = False
            if not s.done:
                s.force = False  # the block end's text gets flushed by the paragraph rules from here
        s.buffer += delta
        s.wake.set()

    def _close(self, s: _Stream) -> None:
        if self._streams.get(s.stream_id) is s:
            del self._streams[s.stream_id]
        self._closed[s.stream_id] = None
        while len(self._closed) > 1000:
            self._closed.popitem(last=False)

    async def _run(self, s: _Stream) -> None:
        """The stream's one flusher: the only code that calls the platform for this stream."""
        try:
            while not s.abandoned:
                if not self._has_work(s):
                    if s.done:
                        if await self._queue_notice(s):
                            continue
                        break
                    s.wake.clear()
                    await s.wake.wait()
                    continue
                interval = s.channel.capabilities.edit_interval
                # Waiting here for a rate-limit slot (rather than in the call) lets text pile up, so
                # the call that finally goes shows the latest text or the fullest block.
                ready = self.limiter.ready_at(s.channel, s.address)
                delay = max(s.last_call + interval, s.retry_until, ready) - self.clock.now()
                if delay > 0:
                    await self.clock.sleep(delay)  # deltas keep arriving; we send the latest after
                    continue
                if s.channel.capabilities.can_edit:
                    await self._tick_edit(s)
                else:
                    await self._tick_blocks(s)
            if s.message_id is not None:
                await self._finalize(s)  # the last message will not change any more
        finally:
            self._close(s)

    def _has_work(self, s: _Stream) -> bool:
        caps = s.channel.capabilities
        text = s.buffer
        if not text.strip():
            return False
        if measure(text, caps.length_unit) > s.limit:
            return True
        if not caps.can_edit:
            return s.force or s.paragraphs.update(text) > 0
        if s.message_id is None and not s.force and len(text.strip()) < self.min_chars:
            return False
        return text != s.shown

    async def _tick_edit(self, s: _Stream) -> None:
        snapshot = s.buffer
        unit = s.channel.capabilities.length_unit
        new_message = s.message_id is None
        if measure(snapshot, unit) <= s.limit:
            head, tail = snapshot, ""
            outcome = await self._deliver(s, snapshot, new_message=new_message)
            if outcome is _Outcome.SHOWN and not s.done:
                s.force = False  # it was shown: min_chars no longer matters for this message
        else:
            # Overflow: finish this message at a safe cut, continue the rest in a new one (next tick).
            head, tail = split_first(snapshot, s.limit, unit)
            outcome = await self._deliver(s, head, new_message=new_message)
            if outcome is _Outcome.SHOWN:
                s.buffer = tail + s.buffer[len(snapshot) :]  # keep what arrived during the call
                await self._finalize(s)
                s.shown = s.shown_out = None
        if outcome is not _Outcome.REFUSED:
            return
        if new_message:  # the platform will not post this text at all: skip it
            self._skipped(s, head)
            s.buffer = tail + s.buffer[len(snapshot) :]
            return
        # The message keeps what it shows; the rest goes on in a new one (skipped there if refused again).
        shown = s.shown or ""
        await self._finalize(s)
        s.buffer = s.buffer[len(shown) :] if s.buffer.startswith(shown) else s.buffer
        s.shown = s.shown_out = None

    async def _tick_blocks(self, s: _Stream) -> None:
        snapshot = s.buffer
        unit = s.channel.capabilities.length_unit
        end = len(snapshot) if s.force else s.paragraphs.update(snapshot)
        if end == len(snapshot) and measure(snapshot, unit) <= s.limit:
            head, tail = snapshot, ""
        elif end > 0 and measure(snapshot[:end], unit) <= s.limit:
            head, tail = snapshot[:end].rstrip(), trim_tail(snapshot[end:])
        else:  # more than one message's worth: the best cut within the limit
            head, tail = split_first(snapshot, s.limit, unit)
        outcome = await self._deliver(s, head, new_message=True)
        if outcome is _Outcome.LATER:
            return
        if outcome is _Outcome.REFUSED:
            self._skipped(s, head)
        s.buffer = tail + s.buffer[len(snapshot) :]
        s.paragraphs.reset()
        await self._finalize(s)  # a block is never edited: complete as soon as it is sent
        if not s.buffer.strip() and not s.done:
            s.force = False

    def _skipped(self, s: _Stream, text: str) -> None:
        s.undelivered += len(text)
        s.reasons.append(s.refusal)
        self.stats.undelivered_chars += len(text)
        log.warning(
            "%s refused %d characters of stream %s; going on with the rest", s.channel.name, len(text), s.stream_id
        )

    async def _queue_notice(self, s: _Stream) -> bool:
        """Once everything else is out, one more message: what the platform refused, and why."""
        if not s.undelivered or s.noticed:
            return False
        s.noticed = True
        await self._finalize(s)  # the notice is a message of its own
        s.shown = s.shown_out = None
        reasons = "; ".join(dict.fromkeys(s.reasons)) or "refused by the platform"
        s.buffer = f"({s.undelivered} characters could not be delivered: {reasons})"
        s.paragraphs.reset()
        s.force = True
        return True

    async def _deliver(self, s: _Stream, text: str, *, new_message: bool) -> _Outcome:
        """Show `text`: as a new message, or by editing the current one (at most one call, plus one for a
        plain-text or reworded resend)."""
        out = text if s.plain else self._format(s.channel, text)
        if not new_message and (text == s.shown or (s.shown_out is not None and out.rstrip() == s.shown_out.rstrip())):
            s.shown = text  # renders the same (e.g. trailing whitespace): no call
            return _Outcome.SHOWN
        if not out.strip():
            s.shown = text
            return _Outcome.SHOWN
        return await self._call(s, text, out, new_message=new_message)

    async def _call(self, s: _Stream, text: str, out: str, *, new_message: bool, reworded: bool = False) -> _Outcome:
        await self.limiter.acquire(s.channel, s.address)
        s.last_call = self.clock.now()
        self.stats.calls += 1
        try:
            if new_message:
                replies = s.messages == 0 or s.channel.capabilities.reply_each_chunk
                reply_to = s.reply_to if replies else None
                s.message_id = await s.channel.send(s.address, out, reply_to=reply_to, plain=s.plain)
                s.messages += 1
                self.stats.sends += 1
            else:
                assert s.message_id is not None
                await s.channel.edit(s.address, s.message_id, out, plain=s.plain)
                self.stats.edits += 1
        except NotModified:
            self.stats.not_modified += 1
            self.stats.edits += 1
        except RetryAfter as e:
            # Wait, then flush whatever is latest by then; no other call for this stream in between.
            self.stats.retry_after += 1
            s.retry_until = self.clock.now() + e.seconds
            log.info("%s asked to retry after %.1fs (stream %s)", s.channel.name, e.seconds, s.stream_id)
            return _Outcome.LATER
        except FormattingRejected as e:
            self.stats.formatting_rejected += 1
            if s.plain:
                return self._failed(s, e, permanent=True)
            log.warning("%s rejected formatting; resending stream %s as plain text", s.channel.name, s.stream_id)
            s.plain = True
            return await self._deliver(s, text, new_message=new_message)
        except TooLong as e:
            self.stats.too_long += 1
            return self._shrink(s, text, e)
        except Refused as e:
            self.stats.refused += 1
            if e.resend and not reworded:
                log.info(
                    "%s refused a message of stream %s (%s); sending it reworded", s.channel.name, s.stream_id, e.reason
                )
                return await self._call(s, text, e.resend, new_message=new_message, reworded=True)
            s.refusal = e.reason
            return _Outcome.REFUSED
        except ChannelError as e:
            return self._failed(s, e, permanent=e.permanent)
        except Exception as e:  # noqa: BLE001 — a platform library's own error: treat as transient
            return self._failed(s, e, permanent=False)
        s.final_call_at = self.clock.now()
        s.shown, s.shown_out = text, out
        s.failures = 0
        return _Outcome.SHOWN

    def _shrink(self, s: _Stream, text: str, e: TooLong) -> _Outcome:
        """The platform counts more than we do: cut this stream's messages at 3/4 of what it refused."""
        caps = s.channel.capabilities
        smaller = min(s.limit, measure(text, caps.length_unit)) * 3 // 4
        if smaller < max(1, caps.max_length // 16):  # not a counting difference any more: give this text up
            s.refusal = f"too long for {s.channel.name}"
            return _Outcome.REFUSED
        log.warning(
            "%s: %s (stream %s); cutting at %d %s from now on",
            s.channel.name,
            e,
            s.stream_id,
            smaller,
            caps.length_unit,
        )
        s.limit = smaller
        return _Outcome.LATER

    async def _finalize(self, s: _Stream) -> None:
        """Tell the channel the current message is complete (optional for channels; errors ignored)."""
        message_id, s.message_id = s.message_id, None
        if message_id is None:
            return
        try:
            await s.channel.finalize(s.address, message_id)
            self.stats.finalized += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 — a platform library's own errors
            log.warning("%s: finalize of message %s failed: %r", s.channel.name, message_id, e)

    def _failed(self, s: _Stream, exc: BaseException, *, permanent: bool) -> _Outcome:
        self.stats.errors += 1
        s.failures += 1
        if permanent or s.failures >= self.max_failures:
            log.error("stream %s on %s abandoned after: %r", s.stream_id, s.channel.name, exc)
            s.abandoned = True
        else:
            log.warning("stream %s on %s: call failed (%r), retrying", s.stream_id, s.channel.name, exc)
        return _Outcome.LATER

    @staticmethod
    def _format(channel: Channel, text: str) -> str:
        try:
            return channel.format(text)
        except Exception:
            log.exception("%s.format failed; sending raw text", channel.name)
            return text
