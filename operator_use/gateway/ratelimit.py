"""Per-chat send rate limits (`Capabilities.rate_limit`): a sliding window that queues, never drops.

Platforms such as Twitch (20 messages per 30 s per channel) silently drop or reject what goes over their
limit. Every send and edit the gateway makes for a limited channel first `acquire`s a slot for its chat
(the chat, not the thread: a platform counts a channel's messages whatever conversation they belong to).
A call over the limit waits until the oldest call in the window is `seconds` old; waiters go in arrival
order, so a long answer cannot starve a short one queued behind it for long.

Slots are counted when a call starts; a platform counts them when they arrive, and network jitter moves
arrivals closer together. A channel therefore declares its window with a margin of its own (Twitch:
`rate_window + rate_margin`, 31 s for its 30 s), not the bare platform figure.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from ..channels.base import Channel
from ..messages import Address
from .clock import Clock

_SWEEP_AT = 1000  # windows kept before idle ones are forgotten


@dataclass(eq=False)
class _Window:
    times: deque[float] = field(default_factory=deque)
    seconds: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SendLimiter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def ready_at(self, channel: Channel, address: Address) -> float:
        """Earliest clock time a call for this chat would go without waiting (nothing is reserved)."""
        limit = channel.capabilities.rate_limit
        window = self._windows.get((channel.name, address.chat_id))
        if not limit or window is None or len(window.times) < limit[0]:
            return -float("inf")
        # The call that frees a slot is the oldest one still counted once the window is full.
        return window.times[-limit[0]] + limit[1]

    async def acquire(self, channel: Channel, address: Address) -> None:
        """Wait until one more call for this chat fits within the limit, and count it."""
        limit = channel.capabilities.rate_limit
        if not limit:
            return
        count, seconds = max(1, int(limit[0])), max(0.0, float(limit[1]))
        key = (channel.name, address.chat_id)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= _SWEEP_AT:
                self._sweep()
            window = self._windows[key] = _Window()
        window.seconds = seconds
        async with window.lock:  # FIFO: the first caller to wait is the first to go
            while True:
                now = self.clock.now()
                while window.times and window.times[0] <= now - seconds:
                    window.times.popleft()
                if len(window.times) < count:
                    window.times.append(now)
                    return
                await self.clock.sleep(window.times[0] + seconds - now)

    def _sweep(self) -> None:
        now = self.clock.now()
        for key, window in list(self._windows.items()):
            if not window.lock.locked() and (not window.times or window.times[-1] <= now - window.seconds):
                del self._windows[key]
