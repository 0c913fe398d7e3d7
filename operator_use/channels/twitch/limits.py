"""Twitch's send limits, as the gateway's rate windows (`Channel.rate_limits`) and a whisper recipient cap.

Chat: "20 messages per 30 seconds" for an account that is not a moderator in the chat (100 where it is),
which Twitch's reference for Send Chat Message gives per sending user, and its chat staff described as
counted across all the channels the account talks in. So a chat message waits for room both in its chat's
window and in the account's (`TwitchConfig.rate_messages` per `rate_window + rate_margin`).

Whispers (Helix Send Whisper): "a maximum of 40 unique recipients per day. Within the per day limit, you may
whisper a maximum of 3 whispers per second and a maximum of 100 whispers per minute." Whispers count in
windows of their own, not the chat's. A 41st recipient within a day is refused at once rather than queued
for up to a day; the count lives in memory, so it starts over with the process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

WHISPERS_PER_SECOND = 3
WHISPERS_PER_MINUTE = 100
WHISPER_RECIPIENTS_PER_DAY = 40
DAY = 24 * 3600.0


def whisper_windows(margin: float) -> list[tuple[str, int, float]]:
    """The rate windows of a whisper, each widened by `margin` seconds (Twitch counts arrivals)."""
    return [
        ("whispers/second", WHISPERS_PER_SECOND, 1.0 + margin),
        ("whispers/minute", WHISPERS_PER_MINUTE, 60.0 + margin),
    ]


class WhisperRecipients:
    """The people whispered to within the last day (by the last whisper to each, so it never counts fewer
    than Twitch does, whether its day is a calendar day or the last 24 hours)."""

    def __init__(self, limit: int = WHISPER_RECIPIENTS_PER_DAY, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._last: OrderedDict[str, float] = OrderedDict()  # user id -> last whisper, oldest first

    def admit(self, user_id: str) -> bool:
        """Count a whisper to `user_id`; False (nothing counted) when that would be one recipient too many."""
        now = self.clock()
        while self._last and next(iter(self._last.values())) <= now - DAY:
            self._last.popitem(last=False)
        if user_id not in self._last and len(self._last) >= self.limit:
            return False
        self._last[user_id] = now
        self._last.move_to_end(user_id)
        return True
