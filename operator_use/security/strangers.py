"""Unknown senders, answered away from the orchestrator's consumer and within limits.

A message from someone the agent does not know may earn a pairing code or the channel's
`rejection_message`. A code touches the pairing store (a file shared with the CLI, under its lock, fsynced),
and every answer leaves through the bus that carries the allowed users' replies. The consumer handles
every message in order, so any of that done inline lets a flood of strangers (many fake accounts, or one
account sending thousands of messages) delay everyone. Here the consumer only pays an O(1) check:

- a token bucket per sender (`per_sender_burst`, refilled at `per_sender_per_minute`) and one for all
  strangers together (`burst`, `per_second`); the per-sender buckets sit in an LRU of `tracked_senders`
  entries, so any number of distinct fake ids uses bounded memory;
- a message that passes is queued (at most `queue`) for one background worker, which asks for the pairing
  code and sends the answer; a full queue drops the message and counts it, it never makes the consumer wait;
- ignored messages are counted, and the counts logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from ..channels.base import ChannelConfig
from ..messages import IncomingMessage
from .config import StrangersConfig
from .pairing import identity

if TYPE_CHECKING:
    from .access import Access

log = logging.getLogger(__name__)

REPORT_EVERY = 60.0  # seconds between two log lines counting ignored messages
Reply = Callable[[IncomingMessage, str], Awaitable[None]]


class Buckets:
    """Token buckets by key. Past `max_keys` the least recently seen key is forgotten: it starts full again
    if it returns, which costs at most one burst (the global bucket still bounds the total)."""

    def __init__(self, burst: float, per_second: float, max_keys: int) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)

    def __len__(self) -> int:
        return len(self._state)

    def tokens(self, key: str, now: float) -> float:
        state = self._state.get(key)
        if state is None:
            return self.burst
        self._state.move_to_end(key)  # a sender still knocking stays remembered, its bucket empty
        tokens, when = state
        return min(self.burst, tokens + (now - when) * self.per_second)

    def take(self, key: str, now: float) -> None:
        self._state[key] = (self.tokens(key, now) - 1, now)
        self._state.move_to_end(key)
        if len(self._state) > self.max_keys:
            self._state.popitem(last=False)


class Strangers:
    def __init__(
        self,
        config: StrangersConfig,
        channel_configs: Mapping[str, ChannelConfig],
        reply: Reply,
        access: Access | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.channel_configs = channel_configs
        self.reply = reply
        self.access = access
        self.clock = clock
        self.senders = Buckets(config.per_sender_burst, config.per_sender_per_minute / 60, config.tracked_senders)
        self.everyone = Buckets(config.burst, config.per_second, 1)
        self._queue: asyncio.Queue[IncomingMessage] = asyncio.Queue(config.queue)
        self._worker: asyncio.Task[None] | None = None
        # Totals since start: messages past the limits, ignored by them, dropped on a full queue, and
        # answered (or found to need no answer) by the worker.
        self.admitted = self.limited = self.dropped = self.handled = 0
        self._unreported_limited = self._unreported_dropped = 0
        self._reported_at = float("-inf")

    # --- the consumer's side: no await, no I/O beyond one log line for an admitted message ---

    def submit(self, message: IncomingMessage) -> None:
        now = self.clock()
        if not self._admit(identity(message.channel, message.user_id), now):
            self.limited += 1
            self._unreported_limited += 1
            self._report(now)
            return
        self.admitted += 1
        log.info("denied message from %s user %s (%s)", message.channel, message.user_id, message.user_name)
        if not self._answerable(message):
            return
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="strangers")
            self._worker.add_done_callback(self._worker_done)
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            self._unreported_dropped += 1
            self._report(now)

    def _admit(self, key: str, now: float) -> bool:
        # The sender's bucket first: one noisy sender must not drain the budget every stranger shares.
        if self.senders.tokens(key, now) < 1 or self.everyone.tokens("", now) < 1:
            return False
        self.senders.take(key, now)
        self.everyone.take("", now)
        return True

    def _answerable(self, message: IncomingMessage) -> bool:
        config = self.channel_configs.get(message.channel)
        if config is None:
            return False
        return bool(config.rejection_message) or (self.access is not None and self.access.offers_pairing(message))

    def _report(self, now: float) -> None:
        if now - self._reported_at < REPORT_EVERY:
            return
        self._reported_at = now
        self._log_ignored()

    def _log_ignored(self) -> None:
        if self._unreported_limited or self._unreported_dropped:
            log.warning(
                "ignored %d messages from unknown senders over their rate limit and %d on a full "
                "queue (totals %d and %d)",
                self._unreported_limited,
                self._unreported_dropped,
                self.limited,
                self.dropped,
            )
        self._unreported_limited = self._unreported_dropped = 0

    # --- the worker ---

    async def _work(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._answer(message)
            except Exception:
                log.exception("could not answer unknown sender %s:%s", message.channel, message.user_id)
            finally:
                self.handled += 1
                self._queue.task_done()

    async def _answer(self, message: IncomingMessage) -> None:
        pairing = await self.access.pairing_reply(message) if self.access is not None else None
        config = self.channel_configs.get(message.channel)
        text = pairing or (config.rejection_message if config is not None else None)
        if text:
            await self.reply(message, text)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the unknown-sender worker stopped", exc_info=task.exception())
        self._worker = None  # the next stranger starts a new one

    async def join(self) -> None:
        """Wait until every queued message has been answered (tests and benchmarks)."""
        await self._queue.join()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._log_ignored()
