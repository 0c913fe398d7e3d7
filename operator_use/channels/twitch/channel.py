"""Twitch chat through twitchio 3: EventSub over websocket in, Helix `POST /chat/messages` out.

The bot answers chat messages that start with the configured prefix or mention it, and whispers when
enabled. Twitch cannot edit and allows 500 characters per message: the gateway sends whole blocks cut at
paragraph or sentence ends, each one a reply to the question, within the send rates declared per chat and for
the whole account (`capabilities.rate_limit`, `account_rate_limit`; whispers have their own, limits.py): it
queues, never drops, paced over `rate_window + rate_margin`, since Twitch counts arrivals. A Helix 429 becomes
`RetryAfter` until `Ratelimit-Reset`. A message Twitch answers with `is_sent: false` becomes `Refused`: a
duplicate of the previous one is offered reworded (a marker Twitch ignores on screen; `TooLong` when there is
no room for it, so it is cut smaller), other drops (AutoMod, chat settings) are skipped and the user told.
An over-long message (422, or the 400 Twitch actually answers, twitchdev/issues#904) becomes `TooLong`.

Tokens come only from the configuration. twitchio would otherwise read and write `.tio.tokens.json` in
the working directory and offers an OAuth web server on port 4343: token files are disabled here and the
web adapter only runs when `oauth_port` is set. twitchio reconnects EventSub sockets itself (after
`session_reconnect` the session and its subscriptions carry over; after a drop it subscribes once on the new
session). What this channel changes in twitchio is in client.py.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from ...messages import Address, IncomingMessage, TextPart
from ...security.redact import install_log_redaction
from ..base import Capabilities, Channel, ChannelError, Refused, RetryAfter, TooLong
from .config import TwitchConfig
from .limits import WhisperRecipients, whisper_windows

__all__ = ["TwitchChannel", "TwitchConfig"]

log = logging.getLogger(__name__)

MAX_CHARS = 500
# Appended (or removed) to make a message differ from the previous one, as chat clients do (Chatterino):
# Twitch shows nothing for this unassigned tag-block code point.
_REPEAT_MARK = " \U000e0000"


class TwitchChannel(Channel):
    name = "twitch"
    # Helix: "The message is limited to a maximum of 500 characters".
    capabilities = Capabilities(
        can_edit=False,
        max_length=MAX_CHARS,
        length_unit="chars",
        edit_interval=1.5,
        formatting="plain",
        reply_each_chunk=True,
        multiline=False,
    )

    def __init__(self, config: TwitchConfig | None = None) -> None:
        self.tw = config or TwitchConfig()
        super().__init__(self.tw)
        # Twitch counts chat messages per account across all its chats too (limits.py).
        window = (self.tw.rate_messages, self.tw.rate_window + self.tw.rate_margin)
        self.capabilities = self.capabilities.model_copy(update={"rate_limit": window, "account_rate_limit": window})
        self._whispered = WhisperRecipients()
        self._client: Any = None
        self._session: Any = None
        self._bot_id = self._bot_login = ""
        self._channels: dict[str, str] = {}  # broadcaster id -> login
        self._saved_urls: tuple[str, str, str] | None = None
        self._redact: Any = None
        self._oauth: Any = None  # the runner of twitchio's OAuth web adapter, when oauth_port is set

    # --- lifecycle ---

    async def connect(self) -> None:
        import aiohttp
        import aiohttp.web
        import twitchio
        from twitchio import eventsub

        from .client import QuietStarletteAdvice, TwitchClient, rate_limit_trace, reason

        cfg = self.tw
        # twitchio's errors and logs can quote token-endpoint URLs: masked in every log record.
        install_log_redaction(
            [s.get_secret_value() for s in (cfg.client_secret, cfg.access_token, cfg.refresh_token) if s]
        )
        self._redact = QuietStarletteAdvice()
        self._redact.attach()
        self._point_at_endpoints()
        secret = cfg.client_secret.get_secret_value() if cfg.client_secret else None
        access = cfg.access_token.get_secret_value() if cfg.access_token else ""
        adapter: Any = twitchio.web.AiohttpAdapter(host="localhost", port=cfg.oauth_port) if cfg.oauth_port else None
        self._session = aiohttp.ClientSession(trace_configs=[rate_limit_trace()])
        self._client = TwitchClient(
            client_id=cfg.client_id,
            client_secret=secret,
            session=self._session,
            fetch_client_user=False,
            **({"adapter": adapter} if adapter else {}),
        )
        self._client.add_listener(self._on_message, event="event_message")
        if cfg.whispers:
            self._client.add_listener(self._on_whisper, event="event_message_whisper")
        try:
            # Without a client secret the user token stands in for the app token (nothing to generate it).
            await self._client.login(token=None if secret else access, load_tokens=False, save_tokens=False)
            refresh = cfg.refresh_token.get_secret_value() if cfg.refresh_token else ""
            valid = await self._client.add_token(access, refresh)
            if not valid.user_id or (cfg.bot_id and cfg.bot_id != valid.user_id):
                raise ChannelError("twitch: access_token is not a user token of bot_id", permanent=True)
            self._bot_id, self._bot_login = valid.user_id, (valid.login or "").lower()
            self.bot_name = self._bot_login or None  # "!ai /new@other_bot" is not for us
            wanted = [c.strip().lstrip("#").lower() for c in cfg.channels if c.strip()]
            ids, logins = [c for c in wanted if c.isdigit()], [c for c in wanted if not c.isdigit()]
            users = (
                await self._client.fetch_users(ids=ids or None, logins=logins or None, token_for=self._bot_id)
                if wanted
                else []
            )
            self._channels = {u.id: u.name for u in users}
            if unknown := set(wanted) - set(self._channels) - set(self._channels.values()):
                log.warning("twitch: no such channel(s): %s", ", ".join(sorted(unknown)))
            if not self._channels and not cfg.whispers:
                raise ChannelError("twitch: no channel to join (channels.twitch.channels)", permanent=True)
            for broadcaster in self._channels:
                await self._client.subscribe_websocket(
                    eventsub.ChatMessageSubscription(broadcaster_user_id=broadcaster, user_id=self._bot_id),
                    token_for=self._bot_id,
                )
            if cfg.whispers:
                await self._client.subscribe_websocket(
                    eventsub.WhisperReceivedSubscription(user_id=self._bot_id), token_for=self._bot_id
                )
            if adapter is not None:
                # Run here rather than with adapter.run(): that binds in a background task and installs
                # signal handlers of its own.
                self._oauth = aiohttp.web.AppRunner(adapter, access_log=None, handle_signals=False)
                await self._oauth.setup()
                await aiohttp.web.TCPSite(self._oauth, "localhost", cfg.oauth_port).start()
                log.info("twitch: OAuth adapter on %s", adapter.redirect_url.removesuffix("/callback"))
        except twitchio.TwitchioException as e:
            await self.disconnect()
            raise ChannelError(f"twitch: could not connect: {reason(e)}") from None
        except BaseException:
            await self.disconnect()
            raise
        log.info("twitch: %s joined %s", self._bot_login, ", ".join(self._channels.values()) or "whispers only")

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close(save_tokens=False)
                for socket in client.sockets():  # also the ones twitchio lost track of
                    await socket.close()
            except Exception as e:  # noqa: BLE001 — a platform library's own errors
                log.warning("twitch: closing the client failed: %r", e)
        if self._oauth is not None:
            await self._oauth.cleanup()
            self._oauth = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._saved_urls is not None:
            import twitchio.eventsub.websockets as ws
            from twitchio.http import Route

            Route.BASE, Route.ID_BASE, ws.WSS = self._saved_urls
            self._saved_urls = None
        if self._redact is not None:
            self._redact.detach()

    def status(self) -> str:
        if self._client is None:
            return "down"
        return "up" if any(s.connected for s in self._client.sockets()) else "reconnecting"

    def _point_at_endpoints(self) -> None:
        import twitchio.eventsub.websockets as ws
        from twitchio.http import Route

        cfg = self.tw
        if not (cfg.api_url or cfg.id_url or cfg.eventsub_url):
            return
        self._saved_urls = (Route.BASE, Route.ID_BASE, ws.WSS)
        Route.BASE = _slash(cfg.api_url) if cfg.api_url else Route.BASE
        Route.ID_BASE = _slash(cfg.id_url) if cfg.id_url else Route.ID_BASE
        ws.WSS = cfg.eventsub_url or ws.WSS

    # --- incoming ---

    async def _on_message(self, m: Any) -> None:
        try:
            chatter = m.chatter
            if chatter.id == self._bot_id or m.broadcaster.id not in self._channels:
                return  # our own messages come back to us; other chats are not ours
            if m.source_broadcaster is not None and m.source_broadcaster.id != m.broadcaster.id:
                return  # shared chat: the message belongs to another channel
            mentioned = any(u.id == self._bot_id for u in m.mentions) or bool(
                re.search(rf"@{re.escape(self._bot_login)}\b", m.text, re.IGNORECASE)
            )
            text = self._addressed_text(m.text, mentioned)
            if not text:
                return
            roles = [r for r in ("broadcaster", "moderator", "vip") if getattr(chatter, r, False)]
            await self.emit(
                IncomingMessage(
                    channel=self.name,
                    chat_id=m.broadcaster.id,
                    thread_id=chatter.id if self.tw.per_user_sessions else None,
                    user_id=chatter.id,
                    user_name=chatter.name,
                    parts=[TextPart(text=text)],
                    message_id=m.id,
                    is_direct=False,
                    mentioned=mentioned,
                    groups=[f"role:{r}" for r in roles],
                )
            )
        except Exception:
            log.exception("twitch: could not handle a chat message")

    def _addressed_text(self, text: str, mentioned: bool) -> str | None:
        """The text meant for the agent, or None when the message is not for the bot."""
        text = text.strip()
        prefix = self.tw.prefix
        if prefix and text.lower().startswith(prefix.lower()) and text[len(prefix) : len(prefix) + 1].strip() == "":
            return text[len(prefix) :].strip() or None
        if self.tw.answer_mentions and mentioned:
            lead = re.compile(rf"^@{re.escape(self._bot_login)}\b[,:]?\s*", re.IGNORECASE)
            return lead.sub("", text).strip() or None
        return None

    async def _on_whisper(self, w: Any) -> None:
        try:
            if w.sender.id != self._bot_id and w.text.strip():
                await self.emit(
                    IncomingMessage(
                        channel=self.name,
                        chat_id=f"@{w.sender.id}",
                        user_id=w.sender.id,
                        user_name=w.sender.name,
                        parts=[TextPart(text=w.text.strip())],
                        message_id=w.id,
                        is_direct=True,
                    )
                )
        except Exception:
            log.exception("twitch: could not handle a whisper")

    # --- outgoing ---

    def rate_limits(self, address: Address) -> list[tuple[str, int, float]]:
        if address.chat_id.startswith("@"):  # a whisper: limits of its own for the account, not the chat's
            return whisper_windows(self.tw.rate_margin)
        return super().rate_limits(address)

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        import twitchio

        from .client import RATE_RESET, reason, seconds_until

        if self._client is None:
            raise ChannelError("twitch is not connected")
        # A chat message is one line: Twitch would drop the line breaks. Where whitespace matters (an approval
        # request's command) it arrives already shown as marks (capabilities.multiline is False).
        message = " ".join(text.split())
        if len(message) > MAX_CHARS:  # twitchio refuses it with a ValueError of its own
            raise TooLong(f"twitch: {len(message)} characters, over {MAX_CHARS}")
        box: dict[str, str] = {}
        token = RATE_RESET.set(box)
        try:
            bot = self._client.create_partialuser(self._bot_id, self._bot_login)
            if address.chat_id.startswith("@"):  # a whisper conversation
                if not self._whispered.admit(address.chat_id[1:]):
                    raise ChannelError(
                        f"twitch: whispers already went to {self._whispered.limit} people in the "
                        "last day, the most Twitch allows",
                        permanent=True,
                    )
                await bot.send_whisper(to_user=address.chat_id[1:], message=message)
                return f"whisper-{time.monotonic_ns()}"
            sent = await self._client.create_partialuser(address.chat_id).send_message(
                message, self._bot_id, token_for=self._bot_id, reply_to_message_id=reply_to
            )
        except twitchio.MessageRejectedError as e:  # answered `is_sent: false`
            log.warning("twitch: message dropped (%s: %s)", e.code, e.message)
            resend = _reworded(message) if e.code == "msg_duplicate" else None
            if e.code == "msg_duplicate" and resend is None:
                # No room for the marker: cut smaller, each part differs from the message before (nothing lost).
                raise TooLong(
                    f"twitch: a repeated message of {len(message)} characters has no room to be marked"
                ) from None
            raise Refused(e.message or e.code or "Twitch did not post it", resend=resend) from None
        except twitchio.HTTPException as e:
            if e.status == 429:
                raise RetryAfter(seconds_until(box.get("reset"))) from None
            if e.status == 422 or (e.status == 400 and "input was not valid" in reason(e)):
                raise TooLong(f"twitch: message refused as too long: {reason(e)}") from None
            raise ChannelError(f"twitch: send failed: {reason(e)}", permanent=400 <= e.status < 500) from None
        except (twitchio.TwitchioException, ValueError) as e:
            raise ChannelError(f"twitch: send failed: {reason(e)}", permanent=True) from None
        finally:
            RATE_RESET.reset(token)
        return str(sent.id)


def _reworded(message: str) -> str | None:
    """`message` made different from itself for the duplicate rule, or None when there is no room for the
    marker within MAX_CHARS (the caller then has the message cut smaller)."""
    mark = _REPEAT_MARK.strip()
    if message.endswith(mark) and (unmarked := message.removesuffix(mark).rstrip()):
        return unmarked
    marked = message + _REPEAT_MARK
    return marked if len(marked) <= MAX_CHARS else None


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"
