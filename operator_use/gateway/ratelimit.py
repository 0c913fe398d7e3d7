"""Send rate limits (`Channel.rate_limits`): sliding windows that queue, never drop.

Platforms such as Twitch (20 messages per 30 s) silently drop or reject what goes over their limit. Every
send and edit the gateway makes for a limited channel first `acquire`s a slot in each window the call counts
in: the chat's (`Capabilities.rate_limit`; the chat, not the thread: a platform counts a channel's messages
whatever conversation they belong to), the account's across all chats (`Capabilities.account_rate_limit`),
or what else the channel declares (Twitch: whispers have windows of their own). A call over a limit waits
until the oldest call in that window is `seconds` old; waiters go in arrival order, so a long answer cannot
starve a short one queued behind it for long.

Windows are taken one after the other, narrowest first, in the order the channel lists them (the same for
every address, so two callers never wait on each other's locks): once a caller has the room it needs in the
chat's window it keeps it (only a lock holder adds to a window) while it waits for the account's. The call
is then counted in all of them at once.

Slots are counted when a call starts; a platform counts them when they arrive, and network jitter moves
arrivals closer together. A channel therefore declares its windows with a margin of its own (Twitch:
`rate_window + rate_margin`, 31 s for its 30 s), not the bare platform figure.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        """Earliest clock time a call for this address would go without waiting (nothing is reserved)."""
        ready = -float("inf")
        for scope, count, seconds in channel.rate_limits(address):
            window = self._windows.get((channel.name, scope))
            count = max(1, int(count))
            if window is not None and len(window.times) >= count:
                # The call that frees a slot is the oldest one still counted once the window is full.
                ready = max(ready, window.times[-count] + max(0.0, float(seconds)))
        return ready

    async def acquire(self, channel: Channel, address: Address) -> None:
        """Wait until one more call for this address fits within every limit it counts in, and count it."""
        limits = channel.rate_limits(address)
        if not limits:
            return
        async with contextlib.AsyncExitStack() as held:
            windows = []
            for scope, count, seconds in limits:
                count, seconds = max(1, int(count)), max(0.0, float(seconds))
                window = self._window((channel.name, scope), seconds)
                await held.enter_async_context(window.lock)  # FIFO: the first caller to wait is the first to go
                await self._room(window, count)
                windows.append(window)
            now = self.clock.now()
            for window in windows:
                window.times.append(now)

    def _window(self, key: tuple[str, str], seconds: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= _SWEEP_AT:
                self._sweep()
            window = self._windows[key] = _Window()
        window.seconds = seconds
        return window

    async def _room(self, window: _Window, count: int) -> None:
        """Return once the window (whose lock the caller holds) has room for one more call."""
        while True:
            now = self.clock.now()
            while window.times and window.times[0] <= now - window.seconds:
                window.times.popleft()
            if len(window.times) < count:
                return
            await self.clock.sleep(window.times[0] + window.seconds - now)

    def _sweep(self) -> None:
        now = self.clock.now()
        for key, window in list(self._windows.items()):
            if not window.lock.locked() and (not window.times or window.times[-1] <= now - window.seconds):
                del self._windows[key]
