"""The web chat channel: a page on 127.0.0.1 whose replies stream in over a websocket.

Each browser is one conversation (`web:<id from its cookie>`); every open tab of it receives the same
events. The gateway drives the page like any platform: `send` adds a message, `edit` replaces its whole
text, `finalize` marks it complete. The HTTP side (auth, page, socket) lives in server.py.

Events to the page (JSON): hello {model, stt, max_message_bytes, max_audio_bytes} first on every
connection, history {items, max_message_bytes, max_audio_bytes}, user {id, text, voice}, send {id, text,
plain, reply_to, buttons?: [{label, command, style}]}, close_buttons {id, text} (the buttons of that message stop
working in every tab, its text, the outcome below it, replaced), edit {id, text, plain}, finalize {id}, voice
{id, reply_to, mime, data (base64), duration_s}, typing, clear (the conversation was archived by /new: every
tab empties its view), error {error}. After the history a tab gets the `send` event of every message whose
buttons are still open (an approval request still waiting), so a reload or a reconnection never hides one.
A socket whose cookie holds another token (the page of an earlier start whose token changed) is closed with
code 4401: the page stops retrying. From the page:
{"type": "message", "text"} (typed, or a button's command) and voice notes {"type": "audio", "mime", "data"
(base64)}, which the orchestrator transcribes like any platform's. The page renders the markdown itself
(raw HTML off, static/render.js): a streamed reply renders incrementally, its finished blocks once and kept,
only the live tail again at each edit (a full parse per edit here would cost the server).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import itertools
import json
import logging
import secrets
import socket
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...messages import Address, AudioPart, Button, HistoryMessage, IncomingMessage, TextPart, conversation_key
from ..base import Capabilities, Channel, ChannelError
from .config import WEB_USER, WebConfig, is_loopback
from .history import history_items
from .token import TOKEN_FILE, stored_token

if TYPE_CHECKING:
    from ...session.store import SessionStore

log = logging.getLogger(__name__)

History = Callable[[str], Awaitable[list[HistoryMessage]]]
# A tab that cannot take an event within this time is dropped (it reconnects and gets the history).
SEND_TIMEOUT = 5.0
# Messages whose buttons are still open, replayed to every tab that (re)connects: at most this many per
# conversation and this many conversations, the oldest forgotten first.
OPEN_BUTTONS_PER_CHAT = 32
OPEN_BUTTON_CHATS = 256


def print_to_console(url: str) -> None:
    # The owner needs the token to open the page: shown on the console once, never written to the log.
    print(f"Web chat: {url}", file=sys.stderr, flush=True)


class WebChannel(Channel):
    name = "web"
    capabilities = Capabilities(
        can_edit=True, max_length=32_000, edit_interval=0.1, formatting="markdown", voice=True, buttons=True
    )

    def __init__(
        self,
        config: WebConfig | None = None,
        *,
        history: History | None = None,
        announce: Callable[[str], None] | None = print_to_console,
    ) -> None:
        self.web_config = config or WebConfig()
        super().__init__(self.web_config)
        secret = self.web_config.token
        # Without a configured token: one kept in the data home (`use_agent`), read at connect; this random
        # one serves only a channel used without an App.
        self.token = secret.get_secret_value() if secret is not None else secrets.token_urlsafe(24)
        self._token_file: Path | None = None
        # What the page's hello event tells it (set by `use_agent`).
        self.model: str | None = None
        self.stt = False
        self.history = history
        self._announce = announce
        self._announced = False
        # chat -> its open tabs, each with the lock that keeps its frames in order (the history and the open
        # buttons a tab gets on attaching go out before any event broadcast after it joined).
        self._sockets: dict[str, dict[Any, asyncio.Lock]] = {}
        # chat -> message id -> the `send` event of a message whose buttons are still open.
        self._open_buttons: OrderedDict[str, OrderedDict[str, dict[str, Any]]] = OrderedDict()
        self._runner: Any = None
        self._port: int | None = None
        self._prefix = secrets.token_hex(3)  # message ids stay unique across restarts
        self._ids = itertools.count(1)

    def use_sessions(self, store: SessionStore) -> None:
        """Read past messages from the app's session store (App calls this; a `history` given wins)."""
        if self.history is not None:
            return

        async def load(key: str) -> list[HistoryMessage]:
            return list((await store.load(key)).messages)

        self.history = load
        store.archive_listeners.append(self._archived)

    def use_agent(self, *, home: Path, model: str | None, stt: bool) -> None:
        """App calls this before connecting: where the token is kept, the model's label and whether voice
        notes can be transcribed (the page shows the model and disables its mic without speech-to-text)."""
        if self.web_config.token is None:
            self._token_file = Path(home) / TOKEN_FILE
        self.model = model
        self.stt = stt

    @property
    def port(self) -> int:
        return self._port if self._port is not None else self.web_config.port

    @property
    def url(self) -> str:
        """The address to open, token included (secret: show it to the owner only)."""
        host = self.web_config.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/?token={self.token}"

    # --- lifecycle ---

    async def connect(self) -> None:
        from aiohttp import web

        from .server import build_app

        config = self.web_config
        if not config.allow_remote and not is_loopback(config.host):
            raise ChannelError(
                f"web chat: host {config.host!r} is not loopback and channels.web.allow_remote is false", permanent=True
            )
        if self._token_file is not None:
            try:
                self.token = await asyncio.to_thread(stored_token, self._token_file)
            except OSError as e:
                raise ChannelError(
                    f"web chat: cannot keep its token in {self._token_file}: {e.strerror or e}", permanent=True
                ) from e
        ip = _ip_literal(config.host)
        if ip is None:
            ip = await asyncio.to_thread(_lookup, config.host, config.port)
        try:
            sock = _listen(ip, config.port)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                # Another program, or another agent with its own data home, holds it: retrying never frees it.
                raise ChannelError(
                    f"web chat cannot listen on {config.host}:{config.port}: the port is already in use "
                    "(by another program, or another operator-use agent). Choose another port: channels.web.port "
                    "in config.yaml, or OPERATOR_CHANNELS__WEB__PORT=PORT (0: any free port)",
                    permanent=True,
                ) from e
            raise ChannelError(f"web chat cannot listen on {config.host}:{config.port}: {e.strerror or e}") from e
        self._port = sock.getsockname()[1]
        # Before the first await: with the web channel started ahead of the terminal, the address is
        # printed before the terminal's prompt instead of in the middle of it.
        if self._announce is not None and not self._announced:
            self._announced = True
            self._announce(self.url)
        runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=2.0)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        log.info(
            "web chat listening on %s:%d (the address with its token is printed at start-up)", config.host, self._port
        )

    async def disconnect(self) -> None:
        sockets = [ws for tabs in self._sockets.values() for ws in tabs]
        self._sockets.clear()
        await asyncio.gather(
            *(asyncio.wait_for(ws.close(code=1001, message=b"server stopping"), 2) for ws in sockets),
            return_exceptions=True,
        )
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def status(self) -> str:
        return "up" if self._runner is not None else "down"

    # --- the page's side (called by server.py) ---

    async def attach(self, chat: str, ws: Any) -> None:
        """A tab connected: register it, then send it the conversation so far and the messages whose buttons
        are still open. Events broadcast meanwhile wait for the tab's lock, so they arrive after these."""
        items: list[dict[str, Any]] = []
        failed = False
        if self.history is not None:
            try:
                messages = await self.history(conversation_key(self.name, chat))
                items = history_items(messages, self.web_config.history_limit)
            except Exception:  # the chat still works without its past
                log.exception("web chat: could not load the history of %s", chat)
                failed = True
        lock = asyncio.Lock()
        async with lock:
            self._sockets.setdefault(chat, {})[ws] = lock
            # Taken as the tab joins: a message sent with buttons after this reaches it by broadcast, a close
            # after this arrives after the replay (both wait for the lock).
            still_open = list(self._open_buttons.get(chat, {}).values())
            await ws.send_str(
                json.dumps(
                    {
                        "type": "hello",
                        "model": self.model,
                        "stt": self.stt,
                        "max_message_bytes": self.web_config.max_message_bytes,
                        "max_audio_bytes": self.web_config.max_audio_bytes,
                    }
                )
            )
            await ws.send_str(
                json.dumps(
                    {
                        "type": "history",
                        "items": items,
                        "max_message_bytes": self.web_config.max_message_bytes,
                        "max_audio_bytes": self.web_config.max_audio_bytes,
                    }
                )
            )
            if failed:
                error = {"type": "error", "error": "the conversation's history could not be loaded"}
                await ws.send_str(json.dumps(error))
            for event in still_open:
                await ws.send_str(json.dumps(event))

    def detach(self, chat: str, ws: Any) -> None:
        tabs = self._sockets.get(chat)
        if tabs is not None:
            tabs.pop(ws, None)
            if not tabs:
                del self._sockets[chat]

    async def receive(self, chat: str, text: str) -> None:
        message_id = self._new_id("u")
        # Every tab shows what was sent, including the one that sent it.
        await self._broadcast(chat, {"type": "user", "id": message_id, "text": text})
        await self.emit(
            IncomingMessage(
                channel=self.name, chat_id=chat, user_id=WEB_USER, parts=[TextPart(text=text)], message_id=message_id
            )
        )

    async def receive_audio(self, chat: str, data: bytes, mime: str) -> None:
        message_id = self._new_id("u")
        await self._broadcast(chat, {"type": "user", "id": message_id, "text": "Voice note", "voice": True})
        await self.emit(
            IncomingMessage(
                channel=self.name,
                chat_id=chat,
                user_id=WEB_USER,
                parts=[AudioPart(data=data, mime=mime, voice_note=True)],
                message_id=message_id,
            )
        )

    # --- primitives used by the gateway ---

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        message_id = self._new_id("m")
        await self._broadcast(
            address.chat_id, {"type": "send", "id": message_id, "reply_to": reply_to, "text": text, "plain": plain}
        )
        return message_id

    async def send_buttons(
        self, address: Address, text: str, buttons: list[Button], *, reply_to: str | None = None
    ) -> str:
        # A press is sent by the page as an ordinary message (`receive`): the same user, the same checks.
        message_id = self._new_id("m")
        event = {
            "type": "send",
            "id": message_id,
            "reply_to": reply_to,
            "text": text,
            "plain": False,
            "buttons": [b.model_dump(include={"label", "command", "style"}) for b in buttons],
        }
        self._remember_buttons(address.chat_id, event)
        await self._broadcast(address.chat_id, event)
        return message_id

    async def close_buttons(self, address: Address, message_id: str, text: str) -> None:
        # Answered (in any tab, or typed), expired or cancelled: no tab replays it any more, every open tab
        # disables its buttons and shows `text` (the request with the outcome under it).
        self._forget_buttons(address.chat_id, message_id)
        await self._broadcast(address.chat_id, {"type": "close_buttons", "id": message_id, "text": text})

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        await self._broadcast(address.chat_id, {"type": "edit", "id": message_id, "text": text, "plain": plain})

    async def finalize(self, address: Address, message_id: str) -> None:
        await self._broadcast(address.chat_id, {"type": "finalize", "id": message_id})

    async def send_voice(self, address: Address, audio: AudioPart, *, reply_to: str | None = None) -> str:
        message_id = self._new_id("m")
        await self._broadcast(
            address.chat_id,
            {
                "type": "voice",
                "id": message_id,
                "reply_to": reply_to,
                "mime": audio.mime,
                "duration_s": audio.duration_s,
                "data": base64.b64encode(audio.data).decode("ascii"),
            },
        )
        return message_id

    async def typing(self, address: Address) -> None:
        await self._broadcast(address.chat_id, {"type": "typing"})

    # --- internals ---

    async def _archived(self, key: str) -> None:
        prefix = f"{self.name}:"
        if key.startswith(prefix):
            chat = key[len(prefix) :]
            self._open_buttons.pop(chat, None)  # the view is emptied: nothing to show again on a reload
            await self._broadcast(chat, {"type": "clear"})

    def _remember_buttons(self, chat: str, event: dict[str, Any]) -> None:
        messages = self._open_buttons.setdefault(chat, OrderedDict())
        self._open_buttons.move_to_end(chat)
        messages[event["id"]] = event
        while len(messages) > OPEN_BUTTONS_PER_CHAT:
            messages.popitem(last=False)
        while len(self._open_buttons) > OPEN_BUTTON_CHATS:
            self._open_buttons.popitem(last=False)

    def _forget_buttons(self, chat: str, message_id: str) -> None:
        messages = self._open_buttons.get(chat)
        if messages is not None:
            messages.pop(message_id, None)
            if not messages:
                del self._open_buttons[chat]

    def _new_id(self, kind: str) -> str:
        return f"{kind}{self._prefix}-{next(self._ids)}"

    async def _broadcast(self, chat: str, event: dict[str, Any]) -> None:
        tabs = list(self._sockets.get(chat, {}).items())
        if tabs:
            data = json.dumps(event)
            await asyncio.gather(*(self._send_to(chat, ws, lock, data) for ws, lock in tabs))

    async def _send_to(self, chat: str, ws: Any, lock: asyncio.Lock, data: str) -> None:
        async def send() -> None:
            async with lock:
                await ws.send_str(data)

        try:
            await asyncio.wait_for(send(), SEND_TIMEOUT)
        except (ConnectionError, RuntimeError, TimeoutError) as e:  # closed or stuck tab: drop it, the others go on
            log.info("web chat: dropping a tab of %s: %r", chat, e)
            self.detach(chat, ws)
            try:
                await asyncio.wait_for(ws.close(), 1)
            except (ConnectionError, RuntimeError, TimeoutError) as close_error:
                log.debug("web chat: closing a dropped tab failed: %r", close_error)


def _ip_literal(host: str) -> str | None:
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return "0.0.0.0" if host == "" else None


def _lookup(host: str, port: int) -> str:
    return str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])


def _listen(ip: str, port: int) -> socket.socket:
    """Bind synchronously (a quick, non-blocking syscall) so the port is known and errors are immediate."""
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old sockets linger in TIME_WAIT
        sock.bind((ip, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
