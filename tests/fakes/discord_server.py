"""A fake Discord on 127.0.0.1: the REST API and the gateway websocket, speaking the real wire protocol.

The channel is pointed at it by its own configuration (`api_base_url=fake.api_base`; the gateway URL
is then discovered at `/gateway/bot`, or given as `gateway_url=fake.gateway_url`).

    async with FakeDiscord() as fake:
        ...                                  # start a channel with any token and those endpoints
        await fake.wait_for(lambda: fake.ready)
        await fake.user_message(DM_CHANNEL, "hi", author=ALICE)

Gateway: HELLO (op 10), an ACK (op 11) for every heartbeat, IDENTIFY -> READY (with a local
`resume_gateway_url` and a session id) + one GUILD_CREATE per guild, dispatches with increasing sequence
numbers, RECONNECT (op 7) or a dropped connection on demand, RESUME -> replay of the events the client missed,
then RESUMED.
REST: `/users/@me`, `/oauth2/applications/@me`, `/gateway(/bot)`, messages (JSON or multipart with
`payload_json`), edits, typing, threads from a message, attachment downloads (`/cdn/...`), and a 429
(with `Retry-After`, `X-RateLimit-*` and, unless told otherwise, the `Via` header discord.py insists on)
on demand. Every JSON answer has `Content-Type: application/json` exactly: discord.py parses nothing else.
Content over `max_content` code points (2000) is answered as Discord does: 400, code 50035, and
`errors.content._errors` BASE_TYPE_MAX_LENGTH; content a `block_when` rule matches (AutoMod) 400, code 200000.
Message components (buttons) are kept on the message (`components`, checked as Discord checks them: action
rows of at most 5 buttons, custom_id 1-100 characters, label at most 80); `press(message, custom_id, user)`
dispatches the INTERACTION_CREATE a user's press makes, and the interaction callback
(`POST /interactions/<id>/<token>/callback`, no bot token, as Discord takes it) is recorded in `callbacks`
(a second callback for one interaction, or one for an unknown token, is refused with 40060 / 10062).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from ..support.serve import serve
from ..support.waiting import Observable

BOT_ID = "1000"
APP_ID = "1001"
GUILD_ID = "2000"
CHANNEL_ID = "3000"  # a text channel in the guild
THREAD_ID = "3001"  # a public thread in that channel
DM_CHANNEL_ID = "5000"
ROLE_ID = "4000"  # a guild role (@everyone is the guild id)

BOT = {"id": BOT_ID, "username": "operator", "discriminator": "0", "avatar": None, "global_name": None, "bot": True}


def user(uid: str, name: str) -> dict[str, Any]:
    return {"id": uid, "username": name, "discriminator": "0", "avatar": None, "global_name": name}


ALICE = user("11", "alice")
BOB = user("12", "bob")
CAROL = user("13", "carol")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # `json_response` would add "; charset=utf-8": discord.py compares the content type exactly.
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


@dataclass
class RateLimit:
    method: str
    times: int
    retry_after: float
    via: bool = True


@dataclass
class Blocked:
    """A message or edit the fake refused for its content (AutoMod)."""

    method: str
    content: str
    posted_before: int  # how many bot messages existed then: where the refused text would have been


@dataclass
class _Session:
    id: str
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None


class FakeDiscord(Observable):
    def __init__(self, *, guilds: list[dict[str, Any]] | None = None, token: str | None = None) -> None:
        # When set, only this bot token is accepted (401 otherwise).
        self.token = token
        self.guilds = guilds if guilds is not None else [default_guild()]
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(900_000)
        self._changed = asyncio.Condition()
        self._send_lock = asyncio.Lock()
        # REST
        self.messages: dict[str, dict[str, Any]] = {}  # every message by id (users' and the bot's)
        self.posted: list[dict[str, Any]] = []  # messages the bot posted, in order
        self.edits: dict[str, list[str]] = {}  # bot message id -> contents of each successful edit
        self.uploads: dict[str, list[dict[str, Any]]] = {}  # bot message id -> [{name, content_type, data}]
        self.typing: list[str] = []  # channel ids
        self.threads_started: list[dict[str, Any]] = []
        self.interactions: dict[str, dict[str, Any]] = {}  # interaction id -> INTERACTION_CREATE payload
        self.callbacks: list[tuple[str, dict[str, Any]]] = []  # (interaction id, callback body) in order
        self.requests: list[tuple[str, str]] = []
        self.rate_limited: list[tuple[str, str]] = []  # (method, path) answered with 429
        self.files: dict[str, tuple[bytes, str]] = {}  # cdn name -> (data, content type)
        self.downloads: list[str] = []  # file names fetched from the CDN, in order
        self._limits: list[RateLimit] = []
        self.max_content = 2000  # code points, as Discord counts
        self.too_long: list[tuple[str, int]] = []  # (method, length) answered 50035
        self.blocked: list[Blocked] = []
        self._block_rules: list[tuple[Any, int, str]] = []
        # gateway
        self.sessions: dict[str, _Session] = {}
        self.session: _Session | None = None
        self.connections: list[str] = []  # websocket paths connected to, in order
        self.identifies = 0
        self.resumes: list[dict[str, Any]] = []  # RESUME payloads received
        self.heartbeats = 0
        self._transports: dict[int, Any] = {}  # id(websocket) -> its TCP transport, for drop()
        self.hold_resume: asyncio.Event | None = None  # set: RESUME is answered only once it is set
        self.ready = False

    # --- lifecycle ---

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._ws)
        app.router.add_get("/gateway-resume", self._ws)
        app.router.add_get("/other-gateway", self._ws)  # for a gateway_url given instead of discovered
        app.router.add_get("/cdn/{key}/{name}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner, self.port = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in self.sessions.values():
            if s.ws is not None:
                await s.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # --- test controls ---

    def rate_limit(self, method: str, *, times: int = 1, retry_after: float = 0.05, via: bool = True) -> None:
        """Answer the next `times` message requests with this method (POST/PATCH) with a 429."""
        self._limits.append(RateLimit(method.upper(), times, retry_after, via))

    def block_when(
        self, matches: Any, code: int = 200000, message: str = "Message was blocked by automatic moderation"
    ) -> None:
        """Refuse messages and edits whose content `matches` (a predicate) with a 400 of this JSON error code."""
        self._block_rules.append((matches, code, message))

    def add_file(self, name: str, data: bytes, content_type: str) -> str:
        key = self._id()
        self.files[key] = (data, content_type)
        return f"{self.base}/cdn/{key}/{quote(name, safe='')}"

    def attachment(
        self, name: str, data: bytes, content_type: str, *, voice: bool = False, duration: float = 1.0
    ) -> dict[str, Any]:
        url = self.add_file(name, data, content_type)
        att: dict[str, Any] = {
            "id": self._id(),
            "filename": name,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if voice:
            att.update(duration_secs=duration, waveform=base64.b64encode(bytes(range(0, 256, 4))).decode())
        return att

    async def user_message(
        self,
        channel_id: str,
        content: str,
        *,
        author: dict[str, Any] = ALICE,
        guild_id: str | None = None,
        roles: list[str] | None = None,
        mention_bot: bool = False,
        reply_to: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        voice: bool = False,
    ) -> dict[str, Any]:
        """Dispatch MESSAGE_CREATE for a message a user wrote; returns its payload."""
        mid = self._id()
        if mention_bot:
            content = f"<@{BOT_ID}> {content}"
        data: dict[str, Any] = {
            "id": mid,
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [BOT] if mention_bot else [],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": (1 << 13) if voice else 0,
        }
        if guild_id is not None:
            data["guild_id"] = guild_id
            data["member"] = {"roles": roles or [], "joined_at": _now(), "deaf": False, "mute": False, "flags": 0}
        if reply_to is not None:
            ref = self.messages[reply_to]
            data["type"] = 19
            data["message_reference"] = {
                "message_id": reply_to,
                "channel_id": ref["channel_id"],
                **({"guild_id": guild_id} if guild_id else {}),
            }
            data["referenced_message"] = ref
        self.messages[mid] = data
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    async def reconnect(self) -> None:
        """Send RECONNECT (op 7); events dispatched from now on are missed until the client RESUMEs."""
        s = self.session
        assert s is not None and s.ws is not None, "no client connected"
        ws, s.ws = s.ws, None
        async with self._send_lock:
            await ws.send_str(json.dumps({"op": 7, "d": None}))
        await self._notify()

    async def drop(self) -> None:
        """Cut the gateway connection without a word (a network failure); the client should RESUME."""
        s = self.session
        assert s is not None and s.ws is not None, "no client connected"
        ws, s.ws = s.ws, None
        transport = self._transports.pop(id(ws), None)
        if transport is not None:
            transport.abort()
        await self._notify()

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        s = self.session
        assert s is not None, "no session: the client has not identified"
        async with self._send_lock:
            s.seq += 1
            payload = {"op": 0, "t": event, "s": s.seq, "d": data}
            s.events.append(payload)
            if s.ws is not None and not s.ws.closed:
                await s.ws.send_str(json.dumps(payload))
        await self._notify()

    async def press(
        self,
        message: dict[str, Any],
        custom_id: str,
        *,
        author: dict[str, Any] = ALICE,
        roles: list[str] | None = None,
    ) -> str:
        """A user presses the button `custom_id` under one of the bot's messages: INTERACTION_CREATE (type 3,
        MESSAGE_COMPONENT), with `member` (and roles) in a guild, `user` in a DM. Returns the interaction id."""
        buttons = [c for row in message.get("components", []) for c in row.get("components", [])]
        assert any(b.get("custom_id") == custom_id for b in buttons), "no such button"
        iid = self._id()
        channel_id = message["channel_id"]
        guild = next((g for g in self.guilds if _channel_in(g, channel_id)), None)
        data: dict[str, Any] = {
            "id": iid,
            "application_id": APP_ID,
            "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "channel_id": channel_id,
            "token": f"itoken-{iid}",
            "version": 1,
            "message": message,
            "locale": "en-US",
            "app_permissions": "0",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild is not None:
            channel = _channel_in(guild, channel_id)
            data.update(
                guild_id=guild["id"],
                guild={"id": guild["id"], "locale": "en-US", "features": []},
                guild_locale="en-US",
                channel=channel,
                context=0,
                member={
                    "user": author,
                    "roles": roles or [],
                    "joined_at": _now(),
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "permissions": "0",
                },
            )
        else:
            data.update(
                user=author,
                channel={"id": channel_id, "type": 1, "recipients": [author]},
                context=1,
            )
        self.interactions[iid] = data
        await self.dispatch("INTERACTION_CREATE", data)
        return iid

    def in_channel(self, channel_id: str) -> list[dict[str, Any]]:
        """The bot's messages in a channel (current content), in order."""
        return [m for m in self.posted if m["channel_id"] == channel_id]

    # --- gateway ---

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._transports[id(ws)] = request.transport
        self.connections.append(request.path)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op, d = frame.get("op"), frame.get("d")
                if op == 1:
                    self.heartbeats += 1
                    async with self._send_lock:
                        await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    await self._identify(ws)
                elif op == 6:
                    await self._resume(ws, d)
                await self._notify()
        finally:
            self._transports.pop(id(ws), None)
            for s in self.sessions.values():
                if s.ws is ws:
                    s.ws = None
            await self._notify()
        return ws

    async def _identify(self, ws: web.WebSocketResponse) -> None:
        self.identifies += 1
        s = _Session(id=f"session-{self.identifies}")
        self.sessions[s.id] = s
        self.session, s.ws = s, ws
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": BOT,
                "session_id": s.id,
                "session_type": "normal",
                "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway-resume",
                "guilds": [{"id": g["id"], "unavailable": True} for g in self.guilds],
                "application": {"id": APP_ID, "flags": 0},
            },
        )
        for g in self.guilds:
            await self.dispatch("GUILD_CREATE", g)
        self.ready = True

    async def _resume(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> None:
        self.resumes.append(d)
        await self._notify()
        if self.hold_resume is not None:
            await self.hold_resume.wait()
        s = self.sessions.get(d.get("session_id", ""))
        if s is None:
            async with self._send_lock:
                await ws.send_str(json.dumps({"op": 9, "d": False}))  # INVALID_SESSION, not resumable
            return
        async with self._send_lock:
            for event in s.events:
                if event["s"] > (d.get("seq") or 0):
                    await ws.send_str(json.dumps(event))
            s.ws = ws
            self.session = s
        await self.dispatch("RESUMED", {})

    # --- REST ---

    async def _cdn(self, request: web.Request) -> web.Response:
        data, content_type = self.files[request.match_info["key"]]
        self.downloads.append(request.match_info["name"])
        return web.Response(body=data, headers={"Content-Type": content_type})

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        self.requests.append((request.method, path))
        if path.startswith("/interactions/"):
            return await self._interaction_callback(request, path)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bot ") or (self.token is not None and auth != f"Bot {self.token}"):
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        parts = path.strip("/").split("/")
        try:
            if request.method == "GET" and path == "/users/@me":
                return _json(BOT)
            if request.method == "GET" and path == "/oauth2/applications/@me":
                return _json(app_info())
            if request.method == "GET" and path in ("/gateway", "/gateway/bot"):
                return _json(
                    {
                        "url": f"ws://127.0.0.1:{self.port}/gateway",
                        "shards": 1,
                        "session_start_limit": {
                            "total": 1000,
                            "remaining": 999,
                            "reset_after": 0,
                            "max_concurrency": 1,
                        },
                    }
                )
            if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
                limited = self._limited(request.method, path)
                if limited is not None:
                    return limited
                if request.method == "POST" and len(parts) == 3:
                    return await self._post_message(request, parts[1])
                if request.method == "PATCH" and len(parts) == 4:
                    return await self._edit_message(request, parts[1], parts[3])
                if request.method == "POST" and len(parts) == 5 and parts[4] == "threads":
                    return await self._start_thread(request, parts[1], parts[3])
            if request.method == "POST" and len(parts) == 3 and parts[0] == "channels" and parts[2] == "typing":
                self.typing.append(parts[1])
                await self._notify()
                return web.Response(status=204)
        except KeyError as exc:
            return _json({"message": f"Unknown {exc}", "code": 10008}, 404)
        return _json({"message": "404: Not Found", "code": 0}, 404)

    async def _interaction_callback(self, request: web.Request, path: str) -> web.Response:
        parts = path.strip("/").split("/")
        if request.method != "POST" or len(parts) != 4 or parts[3] != "callback":
            return _json({"message": "404: Not Found", "code": 0}, 404)
        interaction = self.interactions.get(parts[1])
        if interaction is None or interaction["token"] != parts[2]:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        if any(i == parts[1] for i, _ in self.callbacks):
            return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
        body = await request.json()
        self.callbacks.append((parts[1], body))
        await self._notify()
        if request.query.get("with_response") in ("1", "true"):
            return _json({"interaction": {"id": parts[1], "type": 3}})
        return web.Response(status=204)

    def _limited(self, method: str, path: str) -> web.Response | None:
        for limit in self._limits:
            if limit.method == method and limit.times > 0:
                limit.times -= 1
                self.rate_limited.append((method, path))
                headers = {
                    "Retry-After": str(limit.retry_after),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": str(limit.retry_after),
                    "X-RateLimit-Bucket": "fake-bucket",
                    "X-RateLimit-Scope": "user",
                }
                if limit.via:
                    headers["Via"] = "1.1 google"
                body = {"message": "You are being rate limited.", "retry_after": limit.retry_after, "global": False}
                return _json(body, 429, headers)
        return None

    async def _post_message(self, request: web.Request, channel_id: str) -> web.Response:
        files: list[dict[str, Any]] = []
        if request.content_type == "multipart/form-data":
            payload: dict[str, Any] = {}
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files.append(
                        {
                            "name": part.filename,
                            "content_type": part.headers.get("Content-Type"),
                            "data": bytes(await part.read()),
                        }
                    )
        elif request.content_type == "application/json":
            payload = await request.json()
        else:
            return _json({"message": f"unsupported content type {request.content_type}", "code": 50109}, 400)
        if not payload.get("content") and not files:
            return _json({"message": "Cannot send an empty message", "code": 50006}, 400)
        components = payload.get("components") or []
        invalid = _invalid_components(components)
        if invalid is not None:
            return _json({"message": "Invalid Form Body", "code": 50035, "errors": {"components": invalid}}, 400)
        refused = await self._refuse("POST", payload.get("content") or "")
        if refused is not None:
            return refused
        mid = self._id()
        message = self._bot_message(mid, channel_id, payload.get("content") or "")
        ref = payload.get("message_reference")
        if ref:
            message["type"] = 19
            message["message_reference"] = {"message_id": str(ref["message_id"]), "channel_id": channel_id}
        if components:
            message["components"] = components
        message["attachments"] = []
        for f in files:
            url = self.add_file(f["name"], f["data"], f["content_type"] or "application/octet-stream")
            # proxy_url too, as Discord always sends it: discord.py cannot read an attachment without it.
            message["attachments"].append(
                {
                    "id": self._id(),
                    "filename": f["name"],
                    "size": len(f["data"]),
                    "content_type": f["content_type"],
                    "url": url,
                    "proxy_url": url,
                }
            )
        self.messages[mid] = message
        self.posted.append(message)
        self.edits[mid] = []
        self.uploads[mid] = files
        await self._notify()
        return _json(message)

    async def _edit_message(self, request: web.Request, channel_id: str, message_id: str) -> web.Response:
        message = self.messages[message_id]
        if message["author"]["id"] != BOT_ID or message["channel_id"] != channel_id:
            return _json({"message": "Cannot edit a message authored by another user", "code": 50005}, 403)
        payload = await request.json()
        if "content" in payload:
            refused = await self._refuse("PATCH", payload["content"] or "")
            if refused is not None:
                return refused
            message["content"] = payload["content"]
            message["edited_timestamp"] = _now()
            self.edits[message_id].append(payload["content"])
        if "components" in payload:  # an empty list takes the buttons off
            invalid = _invalid_components(payload["components"] or [])
            if invalid is not None:
                return _json({"message": "Invalid Form Body", "code": 50035, "errors": {"components": invalid}}, 400)
            message["components"] = payload["components"] or []
        await self._notify()
        return _json(message)

    async def _refuse(self, method: str, content: str) -> web.Response | None:
        """Discord's answer to content it will not post, or None."""
        if len(content) > self.max_content:
            self.too_long.append((method, len(content)))
            await self._notify()
            error = {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {self.max_content} or fewer in length."}
            return _json(
                {"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [error]}}}, 400
            )
        for matches, code, text in self._block_rules:
            if matches(content):
                self.blocked.append(Blocked(method, content, len(self.posted)))
                await self._notify()
                return _json({"message": text, "code": code}, 400)
        return None

    async def _start_thread(self, request: web.Request, channel_id: str, message_id: str) -> web.Response:
        payload = await request.json()
        guild = next(g for g in self.guilds if any(c["id"] == channel_id for c in g["channels"]))
        thread = thread_payload(message_id, channel_id, guild["id"], payload.get("name", "thread"), owner=BOT_ID)
        guild["threads"].append(thread)
        self.threads_started.append(thread)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json(thread, 201)

    # --- payloads ---

    def _id(self) -> str:
        return str(next(self._ids))

    def _bot_message(self, mid: str, channel_id: str, content: str) -> dict[str, Any]:
        return {
            "id": mid,
            "channel_id": channel_id,
            "author": BOT,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }


def _channel_in(guild: dict[str, Any], channel_id: str) -> dict[str, Any] | None:
    return next((c for c in [*guild["channels"], *guild["threads"]] if c["id"] == channel_id), None)


def _invalid_components(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Discord's checks on message buttons: rows (type 1) of 1-5 buttons (type 2), a custom_id of 1-100
    characters, a label of at most 80, a style from 1 to 4 (5 is a link); None when valid."""
    for row in rows:
        buttons = row.get("components") or []
        if row.get("type") != 1 or not 1 <= len(buttons) <= 5:
            return {"_errors": [{"code": "UNION_TYPE_CHOICES", "message": "Value of field type must be one of (1,)."}]}
        for b in buttons:
            if (
                b.get("type") != 2
                or not 1 <= len(b.get("custom_id") or "") <= 100
                or len(b.get("label") or "") > 80
                or b.get("style") not in (1, 2, 3, 4)
            ):
                return {"_errors": [{"code": "BASE_TYPE_INVALID", "message": "Invalid button."}]}
    return None


def app_info() -> dict[str, Any]:
    return {
        "id": APP_ID,
        "name": "operator",
        "description": "",
        "icon": None,
        "bot_public": False,
        "bot_require_code_grant": False,
        "owner": user("10", "owner"),
        "verify_key": "0" * 64,
        "flags": 0,
        "team": None,
        "summary": "",
    }


def text_channel(cid: str, guild_id: str, name: str) -> dict[str, Any]:
    return {
        "id": cid,
        "type": 0,
        "guild_id": guild_id,
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "topic": None,
        "nsfw": False,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "parent_id": None,
    }


def thread_payload(tid: str, parent_id: str, guild_id: str, name: str, owner: str = "11") -> dict[str, Any]:
    return {
        "id": tid,
        "type": 11,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "owner_id": owner,
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": _now(),
            "locked": False,
        },
    }


def role(rid: str, name: str, position: int) -> dict[str, Any]:
    return {
        "id": rid,
        "name": name,
        "permissions": "0",
        "position": position,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def default_guild(gid: str = GUILD_ID) -> dict[str, Any]:
    return {
        "id": gid,
        "name": "test guild",
        "icon": None,
        "owner_id": "10",
        "unavailable": False,
        "large": False,
        "member_count": 4,
        "mfa_level": 0,
        "verification_level": 0,
        "explicit_content_filter": 0,
        "default_message_notifications": 0,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "system_channel_flags": 0,
        "afk_timeout": 300,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": [role(gid, "@everyone", 0), role(ROLE_ID, "helpers", 1)],
        "members": [{"user": BOT, "roles": [], "joined_at": _now(), "deaf": False, "mute": False, "flags": 0}],
        "channels": [text_channel(CHANNEL_ID, gid, "general")],
        "threads": [thread_payload(THREAD_ID, CHANNEL_ID, gid, "a thread")],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }
