"""A fake of the Slack Web API and Socket Mode, speaking their wire protocols on 127.0.0.1.

The real `slack_sdk`/`slack_bolt` clients are pointed at it:

    async with FakeSlackServer() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_base_url)   # ".../api/"

Web API: POST /api/<method> with the token in `Authorization: Bearer`, parameters as JSON, form or query
(auth.test, apps.connections.open, chat.postMessage, chat.update, files.getUploadURLExternal,
files.completeUploadExternal), the upload URL it hands out, and file downloads (url_private) that need the
bot token. `rate_limit(method, times)` answers the next calls with 429 + Retry-After. `limit_text(method, n)`
answers a longer `text` (in code points) with `msg_too_long`; `refuse_when(matches, error)` answers a
chat.postMessage / chat.update whose text matches with that error (e.g. a Slack Connect channel's
`slack_connect_file_link_sharing_blocked`); `close_edits(ts)` answers updates of that message
`edit_window_closed`. Refused calls keep their `error`.

Socket Mode: apps.connections.open returns ws://127.0.0.1:PORT/socket?ticket=N. A connection gets
`hello`, then every unacknowledged envelope (redelivery after a reconnect), then what tests send with
`send_event`. Acks ({"envelope_id": ...}) are recorded; `send_disconnect` sends a `disconnect` envelope;
`drop_socket` cuts the TCP connection without a close frame. Like Slack, the bot's own posts and edits
come back as `message` events (bot_id set; subtype message_changed for edits).

Block Kit: chat.postMessage's `blocks` are kept (`Posted.blocks`) and checked as Slack checks them (section
text at most 3,000 characters, buttons with a unique action_id, a value of at most 2,000 characters, a label of
at most 75 and a style of primary or danger; `invalid_blocks` otherwise). `press(posted, action_id, user)`
sends the `interactive` envelope (a `block_actions` payload) a user's press makes; its ack is recorded like
any other (`acked(envelope_id)`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from ..support.serve import serve
from ..support.waiting import Observable


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None
    status: int = 200
    error: str | None = None  # Slack's "error" when it answered ok: false


@dataclass
class Posted:
    channel: str
    ts: str
    text: str
    thread_ts: str | None
    mrkdwn: bool = True
    updates: list[str] = field(default_factory=list)
    blocks: list[dict[str, Any]] | None = None

    def buttons(self) -> list[dict[str, Any]]:
        return [e for b in self.blocks or [] if b.get("type") == "actions" for e in b.get("elements", [])]

    @property
    def final_text(self) -> str:
        return self.updates[-1] if self.updates else self.text


@dataclass
class Upload:
    file_id: str
    filename: str
    length: int
    data: bytes = b""
    channel: str | None = None
    thread_ts: str | None = None
    title: str | None = None
    completed: bool = False


@dataclass
class Envelope:
    envelope_id: str
    event_id: str
    body: dict[str, Any]
    deliveries: list[int] = field(default_factory=list)  # connection numbers it was sent on
    acked: bool = False
    lose_ack: bool = False


class FakeSlackServer(Observable):
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        team_id: str = "T0001",
        echo_bot_messages: bool = True,
    ) -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.bot_user_id, self.bot_id, self.team_id = bot_user_id, bot_id, team_id
        self.echo_bot_messages = echo_bot_messages
        self.port = 0
        self.calls: list[Call] = []
        self.posted: list[Posted] = []
        self.uploads: dict[str, Upload] = {}
        self.files: dict[str, tuple[bytes, str]] = {}  # file id -> (data, mime)
        self.downloads: list[tuple[str, str | None]] = []  # (file id, Authorization header)
        self.envelopes: list[Envelope] = []
        self.acks: list[tuple[str, int]] = []  # (envelope id, connection number)
        self.connections = 0  # websockets accepted
        self.opens = 0  # apps.connections.open calls
        # Cleared: apps.connections.open waits (lets a test look at the client while it reconnects).
        self.allow_open = asyncio.Event()
        self.allow_open.set()
        self._limits: dict[str, list[float]] = {}
        self._text_limits: dict[str, int] = {}
        self._text_rules: list[tuple[Any, str]] = []
        self._closed_edits: set[str] = set()
        self._ws: web.WebSocketResponse | None = None
        self._ws_number = 0
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---

    async def __aenter__(self) -> FakeSlackServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{file_id}/{name}", self._download)
        app.router.add_get("/socket", self._socket)
        self._runner, self.port = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return self.base_url + "/api/"  # the trailing slash matters to the SDK

    # --- test helpers ---

    def rate_limit(self, method: str, times: int = 1, retry_after: float = 1) -> None:
        self._limits.setdefault(method, []).extend([retry_after] * times)

    def limit_text(self, method: str, max_chars: int) -> None:
        self._text_limits[method] = max_chars

    def refuse_when(self, matches: Any, error: str) -> None:
        """Answer chat.postMessage / chat.update with `error` when their text `matches` (a predicate)."""
        self._text_rules.append((matches, error))

    def close_edits(self, ts: str) -> None:
        self._closed_edits.add(ts)

    def refused(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.error is not None and (method is None or c.method == method)]

    def add_file(self, name: str, mime: str, data: bytes, **extra: Any) -> dict[str, Any]:
        """Host a file; returns its Slack file object for a message event's `files`."""
        file_id = f"F{next(self._ids):06d}"
        self.files[file_id] = (data, mime)
        url = f"{self.base_url}/files/{file_id}/{quote(name, safe='')}"
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mime,
            "size": len(data),
            "mode": "hosted",
            "url_private": url,
            "url_private_download": url + "?download=1",
            **extra,
        }

    def new_ts(self) -> str:
        n = next(self._ids)
        return f"{1_700_000_000 + n}.{n:06d}"

    def message(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "D1",
        thread_ts: str | None = None,
        ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        event = {
            "type": "message",
            "user": user,
            "text": text,
            "channel": channel,
            "ts": ts or self.new_ts(),
            "channel_type": "im" if channel.startswith("D") else "channel",
            "team": self.team_id,
            **extra,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def mention(self, message: dict[str, Any]) -> dict[str, Any]:
        """The app_mention event Slack sends alongside a channel message that mentions the bot."""
        event = {k: v for k, v in message.items() if k != "channel_type"}
        event["type"] = "app_mention"
        return event

    def replies(self, channel: str, thread_ts: str | None = None) -> list[Posted]:
        return [p for p in self.posted if p.channel == channel and p.thread_ts == thread_ts]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def acked(self, envelope_id: str) -> bool:
        return any(e.envelope_id == envelope_id and e.acked for e in self.envelopes)

    # --- socket mode ---

    async def send_event(self, event: dict[str, Any], *, event_id: str | None = None, lose_ack: bool = False) -> str:
        """Deliver an events_api envelope now (or on the next connection); returns its envelope id."""
        n = next(self._ids)
        env = Envelope(envelope_id=f"env-{n}", event_id=event_id or f"Ev{n:08d}", body={}, lose_ack=lose_ack)
        env.body = {
            "envelope_id": env.envelope_id,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "verification-token",
                "team_id": self.team_id,
                "api_app_id": "A0001",
                "type": "event_callback",
                "event_id": env.event_id,
                "event_time": int(time.time()),
                "event": event,
                "authorizations": [{"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True}],
            },
        }
        async with self._send_lock:
            self.envelopes.append(env)
            if self._ws is not None and not self._ws.closed:
                await self._deliver(self._ws, env)
        return env.envelope_id

    async def press(self, posted: Posted, action_id: str, *, user: str = "U1") -> str:
        """A user presses a button under one of the bot's messages: a `block_actions` payload in an `interactive`
        envelope. Returns its envelope id."""
        button = next(b for b in posted.buttons() if b["action_id"] == action_id)
        block_id = next(b.get("block_id", "actions") for b in posted.blocks or [] if b.get("type") == "actions")
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "text": posted.text,
            "ts": posted.ts,
            "blocks": posted.blocks,
        }
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": posted.ts,
            "channel_id": posted.channel,
            "is_ephemeral": False,
        }
        if posted.thread_ts:
            message["thread_ts"] = container["thread_ts"] = posted.thread_ts
        n = next(self._ids)
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id},
            "api_app_id": "A0001",
            "token": "verification-token",
            "container": container,
            "trigger_id": f"trigger-{n}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": posted.channel, "name": "directmessage" if posted.channel.startswith("D") else "general"},
            "message": message,
            "state": {"values": {}},
            "response_url": f"{self.base_url}/response/{n}",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": button["text"],
                    "value": button.get("value"),
                    **({"style": button["style"]} if "style" in button else {}),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        env = Envelope(envelope_id=f"env-{n}", event_id=f"Act{n:08d}", body={})
        env.body = {
            "envelope_id": env.envelope_id,
            "type": "interactive",
            "accepts_response_payload": False,
            "payload": payload,
        }
        async with self._send_lock:
            self.envelopes.append(env)
            if self._ws is not None and not self._ws.closed:
                await self._deliver(self._ws, env)
        return env.envelope_id

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        async with self._send_lock:
            assert self._ws is not None
            await self._ws.send_str(
                json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}})
            )

    async def drop_socket(self) -> None:
        """Cut the connection without a close frame (a network failure)."""
        async with self._send_lock:
            assert self._ws is not None
            transport = self._ws_request.transport if self._ws_request else None
            if transport is not None:
                transport.abort()

    async def _deliver(self, ws: web.WebSocketResponse, env: Envelope) -> None:
        if env.deliveries:  # Slack marks redeliveries
            env.body["retry_attempt"] = len(env.deliveries)
            env.body["retry_reason"] = "timeout"
        try:
            await ws.send_str(json.dumps(env.body))
        except (ConnectionError, RuntimeError):
            return  # the socket is gone: the envelope stays unacknowledged and is redelivered
        env.deliveries.append(self._ws_number)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        async with self._send_lock:
            self.connections += 1
            self._ws_number = number = self.connections
            self._ws, self._ws_request = ws, request
            await ws.send_str(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": 1,
                        "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                        "connection_info": {"app_id": "A0001"},
                    }
                )
            )
            for env in self.envelopes:
                if not env.acked:
                    await self._deliver(ws, env)
        await self._notify()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                env = next((e for e in self.envelopes if e.envelope_id == data.get("envelope_id")), None)
                if env is None:
                    continue
                if env.lose_ack:  # as if the ack never made it: redelivered after the next reconnect
                    env.lose_ack = False
                else:
                    env.acked = True
                self.acks.append((env.envelope_id, number))
                await self._notify()
        finally:
            await self._notify()
        return ws

    _ws_request: web.Request | None = None

    # --- web API ---

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            params.update(dict(await request.post()))
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else params.get("token")
        call = Call(method, params, token)
        self.calls.append(call)
        try:
            expected = self.app_token if method == "apps.connections.open" else self.bot_token
            if token != expected:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            limits = self._limits.get(method)
            if limits:
                call.status = 429
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(int(limits.pop(0)))}
                )
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return web.json_response({"ok": False, "error": "unknown_method"})
            refusal = self._text_refusal(method, params)
            result = {"ok": False, "error": refusal} if refusal else await handler(params)
            if not result.get("ok"):
                call.error = result.get("error")
            return web.json_response(result)
        finally:
            await self._notify()

    def _text_refusal(self, method: str, p: dict[str, Any]) -> str | None:
        if method not in ("chat.postMessage", "chat.update"):
            return None
        text = str(p.get("text") or "")
        if method == "chat.update" and p.get("ts") in self._closed_edits:
            return "edit_window_closed"
        if method in self._text_limits and len(text) > self._text_limits[method]:
            return "msg_too_long"
        return next((error for matches, error in self._text_rules if matches(text)), None)

    async def _m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "operator",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _m_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        self.opens += 1
        await self._notify()
        await self.allow_open.wait()
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={self.opens}"}

    async def _m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, text = p.get("channel"), p.get("text")
        if not channel or not text:
            return {"ok": False, "error": "channel_not_found" if not channel else "no_text"}
        blocks = json.loads(p["blocks"]) if isinstance(p.get("blocks"), str) else p.get("blocks")
        if blocks is not None and not _valid_blocks(blocks):
            return {"ok": False, "error": "invalid_blocks"}
        posted = Posted(
            channel, self.new_ts(), text, p.get("thread_ts"), mrkdwn=p.get("mrkdwn", True) is not False, blocks=blocks
        )
        self.posted.append(posted)
        message = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id, "text": text, "ts": posted.ts}
        if posted.thread_ts:
            message["thread_ts"] = posted.thread_ts
        await self._echo(
            {**message, "channel": channel, "channel_type": "im" if channel.startswith("D") else "channel"}
        )
        return {"ok": True, "channel": channel, "ts": posted.ts, "message": message}

    async def _m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        posted = next((m for m in self.posted if m.channel == p.get("channel") and m.ts == p.get("ts")), None)
        if posted is None:
            return {"ok": False, "error": "message_not_found"}
        if "blocks" in p:  # without them Slack keeps the message's blocks
            blocks = json.loads(p["blocks"]) if isinstance(p.get("blocks"), str) else p.get("blocks")
            if blocks is not None and not _valid_blocks(blocks):
                return {"ok": False, "error": "invalid_blocks"}
            posted.blocks = blocks
        posted.updates.append(p.get("text", ""))
        await self._echo(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": posted.channel,
                "hidden": True,
                "ts": self.new_ts(),
                "message": {
                    "type": "message",
                    "user": self.bot_user_id,
                    "bot_id": self.bot_id,
                    "text": posted.final_text,
                    "ts": posted.ts,
                },
            }
        )
        return {"ok": True, "channel": posted.channel, "ts": posted.ts, "text": posted.final_text}

    async def _m_files_getUploadURLExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._ids):06d}"
        self.uploads[file_id] = Upload(file_id, str(p.get("filename")), int(p.get("length", 0)))
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    async def _m_files_completeUploadExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(p["files"]) if isinstance(p.get("files"), str) else p.get("files") or []
        out = []
        for f in files:
            upload = self.uploads.get(f.get("id"))
            if upload is None or len(upload.data) != upload.length:
                return {"ok": False, "error": "file_upload_not_found" if upload is None else "invalid_length"}
            upload.completed, upload.title = True, f.get("title")
            upload.channel, upload.thread_ts = p.get("channel_id"), p.get("thread_ts")
            out.append({"id": upload.file_id, "name": upload.filename, "title": upload.title})
        return {"ok": True, "files": out}

    async def _echo(self, event: dict[str, Any]) -> None:
        if self.echo_bot_messages:
            await self.send_event(event)

    # --- files ---

    async def _upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="no such upload")
        upload.data = await request.read()
        await self._notify()
        return web.Response(text=f"OK - {len(upload.data)}")

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        auth = request.headers.get("Authorization")
        self.downloads.append((file_id, auth))
        if file_id not in self.files:
            return web.Response(status=404)
        if auth != f"Bearer {self.bot_token}":
            # What Slack does without a valid token: its sign-in page, with a 200.
            return web.Response(text="<html><body>Sign in to Slack</body></html>", content_type="text/html")
        data, mime = self.files[file_id]
        return web.Response(body=data, content_type=mime)


def _valid_blocks(blocks: Any) -> bool:
    """The part of Slack's Block Kit checks our messages meet: sections and button action blocks."""
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return False
    action_ids: set[str] = set()
    for block in blocks:
        if block.get("type") == "section":
            text = block.get("text") or {}
            if text.get("type") not in ("mrkdwn", "plain_text") or not 1 <= len(text.get("text") or "") <= 3000:
                return False
        elif block.get("type") == "actions":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 25:
                return False
            for e in elements:
                label = (e.get("text") or {}).get("text") or ""
                if (
                    e.get("type") != "button"
                    or not 1 <= len(label) <= 75
                    or len(e.get("value") or "") > 2000
                    or e.get("style") not in (None, "primary", "danger")
                    or not e.get("action_id")
                    or e["action_id"] in action_ids
                ):
                    return False
                action_ids.add(e["action_id"])
        else:
            return False
    return True
