"""Which Slack events become messages, and in which conversation.

- Direct messages (channel type "im") are answered top-level and keep one history per DM channel; a
  message the user writes inside a DM thread is answered in that thread (its own history).
- In channels, group DMs and private channels the bot answers a mention, in the mention's thread, and
  afterwards every message of a thread it took part in. The thread's root `ts` is the conversation's
  thread id, so each thread has its own history.
- Edits, deletions, joins and any other message subtype are not messages to answer, and neither is
  anything the bot itself wrote.
- Slack delivers at least once (retries with the same event, redelivery of unacknowledged envelopes
  after a reconnect) and a mention arrives twice (`app_mention` and `message`): a message is claimed by
  its (channel, ts) before it is handled, so it is handled once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# A plain message, one carrying files, and a thread reply also sent to the channel.
ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}


class BoundedSet:
    """Remembers the most recent `limit` keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: OrderedDict[Any, None] = OrderedDict()

    def add(self, key: Any) -> bool:
        """Add `key`; False when it was already there."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True

    def discard(self, key: Any) -> None:
        self._keys.pop(key, None)

    def __contains__(self, key: Any) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True)
class Route:
    chat_id: str
    thread_id: str | None
    is_direct: bool
    mentioned: bool
    text: str


class EventRouter:
    def __init__(self, *, max_threads: int = 2000, max_seen: int = 5000) -> None:
        self.bot_user_id: str | None = None
        self.bot_id: str | None = None
        self.threads = BoundedSet(max_threads)
        self.seen = BoundedSet(max_seen)

    def is_self(self, event: dict[str, Any]) -> bool:
        return bool(
            (self.bot_user_id and event.get("user") == self.bot_user_id)
            or (self.bot_id and event.get("bot_id") == self.bot_id)
        )

    def route(self, event: dict[str, Any], *, mention_event: bool = False) -> Route | None:
        """Where a `message` or `app_mention` event goes, or None when it is not for the bot."""
        if event.get("subtype") not in ANSWERED_SUBTYPES or self.is_self(event):
            return None
        channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
        if not channel or not ts or not user:
            return None
        thread_ts = event.get("thread_ts")
        raw = event.get("text") or ""
        mention = f"<@{self.bot_user_id}>" if self.bot_user_id else None
        text = _plain(raw.replace(mention, "") if mention else raw)
        # app_mention events carry no channel_type; DM channel ids start with D.
        channel_type = event.get("channel_type") or ("im" if channel.startswith("D") else "channel")
        if channel_type == "im":
            return Route(channel, thread_ts, True, False, text)
        if mention_event or (mention is not None and mention in raw):
            thread = thread_ts or ts
            self.threads.add((channel, thread))
            return Route(channel, thread, False, True, text)
        if thread_ts and (channel, thread_ts) in self.threads:
            return Route(channel, thread_ts, False, False, text)
        return None

    def claim(self, event: dict[str, Any]) -> bool:
        """True the first time this message is seen."""
        return self.seen.add((event.get("channel"), event.get("ts")))

    def release(self, event: dict[str, Any]) -> None:
        """Handling failed: a redelivery may try again."""
        self.seen.discard((event.get("channel"), event.get("ts")))

    def joined(self, channel: str, thread_ts: str) -> None:
        """The bot wrote in this thread: follow-ups there are for it."""
        self.threads.add((channel, thread_ts))


def _plain(text: str) -> str:
    # Slack escapes exactly &, < and > in message text; mentions and links stay in <...> form.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
