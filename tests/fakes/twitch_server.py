"""A fake of the Twitch APIs a chat bot uses, on 127.0.0.1, speaking their real wire protocols.

- id.twitch.tv: `POST /oauth2/token` (client credentials, refresh token) and `GET /oauth2/validate`;
- api.twitch.tv/helix: `GET /users`, `POST /eventsub/subscriptions` (202, 409 on a duplicate),
  `POST /chat/messages` (can answer 429 with `Ratelimit-Reset`; over 500 characters the 400 Twitch really
  answers, twitchdev/issues#904; a message identical to the sender's previous one in that chat within
  `duplicate_window` seconds, or one matched by a `drop_when` rule (AutoMod), is answered 200 with
  `is_sent: false` and a `drop_reason`), `POST /whispers`;
- the EventSub websocket: `session_welcome` at once, `session_keepalive` every `keepalive_interval`,
  `notification`s (`channel.chat.message`, `user.whisper.message`), `session_reconnect` with a
  `reconnect_url` back to this server (the session and its subscriptions survive it, as on Twitch), and
  dropped connections (their subscriptions are gone, as on Twitch).

Point twitchio at it with `twitchio.http.Route.BASE = server.helix_url`, `Route.ID_BASE = server.id_url`
and `twitchio.eventsub.websockets.WSS = server.ws_url` (the Twitch channel's config does that).

Like Twitch, messages the bot posts come back to it as `channel.chat.message` notifications.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ..support.serve import serve
from ..support.waiting import Observable

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"


@dataclass
class User:
    id: str
    login: str
    token: str | None = None  # user access token, for users that authorize the app (the bot)
    refresh: str | None = None
    scopes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.login.capitalize()


@dataclass
class Subscription:
    id: str
    type: str
    version: str
    condition: dict[str, str]
    session_id: str
    user_id: str  # whose token created it


@dataclass
class ChatPost:
    """One POST /helix/chat/messages as received (also the rejected ones)."""

    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival (Ratelimit-Reset is in Unix seconds)
    body: dict[str, Any]
    status: int
    message_id: str | None = None
    reset: int | None = None  # the Ratelimit-Reset sent with a 429
    drop_code: str | None = None  # answered `is_sent: false` with this drop_reason code

    @property
    def text(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def reply_to(self) -> str | None:
        return self.body.get("reply_parent_message_id")


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    session_id: str
    number: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class FakeTwitchServer(Observable):
    def __init__(
        self,
        *,
        bot_login: str = "opbot",
        keepalive_interval: float = 0.5,
        echo_own_messages: bool = True,
        duplicate_window: float | None = 30.0,
    ) -> None:
        self.keepalive_interval = keepalive_interval
        self.duplicate_window = duplicate_window
        self.max_message = 500  # characters
        self.echo_own_messages = echo_own_messages
        self.port = 0
        self._ids = itertools.count(1000)
        self.users: dict[str, User] = {}
        self.bot = self.add_user(
            bot_login,
            token="bot-access-token",
            refresh="bot-refresh-token",
            scopes=["user:read:chat", "user:write:chat", "user:bot", "user:read:whispers", "user:manage:whispers"],
        )
        self.app_tokens: set[str] = set()
        self.subscriptions: list[Subscription] = []  # live ones
        self.subscription_requests: list[dict[str, Any]] = []  # every POST, accepted or not
        self.duplicate_subscriptions = 0  # POSTs answered 409
        self.chat_posts: list[ChatPost] = []
        self.whispers: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request
        # Answers for the next chat POSTs: (status, seconds until Ratelimit-Reset).
        self.chat_failures: list[tuple[int, float]] = []
        # Messages Twitch takes but does not post: (matches the text, drop code, drop message).
        self.drop_rules: list[tuple[Callable[[str], bool], str, str]] = []
        self._last_posted: dict[tuple[str, str], tuple[str, float]] = {}  # (sender, broadcaster) -> text, at
        self.connections: list[_Conn] = []  # every websocket ever accepted, in order
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- setup ---

    def add_user(self, login: str, **kw: Any) -> User:
        user = User(id=str(next(self._ids)), login=login, **kw)
        self.users[user.id] = user
        return user

    def user(self, login: str) -> User:
        return next(u for u in self.users.values() if u.login == login)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def helix_url(self) -> str:
        return self.base_url + "/helix/"

    @property
    def id_url(self) -> str:
        return self.base_url + "/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> FakeTwitchServer:
        app = web.Application()
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_get("/oauth2/validate", self._validate)
        app.router.add_get("/helix/users", self._users)
        app.router.add_post("/helix/eventsub/subscriptions", self._subscribe)
        app.router.add_post("/helix/chat/messages", self._chat_message)
        app.router.add_post("/helix/whispers", self._whisper)
        app.router.add_get("/ws", self._websocket)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTwitchServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- waiting (tests never sleep) ---

    def live(self) -> list[_Conn]:
        return [c for c in self.connections if not c.ws.closed and not c.closed.is_set()]

    def sent_posts(self) -> list[ChatPost]:
        """Chat messages Twitch posted in the chat, in arrival order."""
        return [p for p in self.chat_posts if p.status == 200 and p.drop_code is None]

    def drop_when(
        self,
        matches: Callable[[str], bool],
        code: str = "msg_rejected",
        message: str = "Your message wasn't posted due to conflicts with the channel's moderation settings.",
    ) -> None:
        """Messages whose text `matches` are taken but not posted (`is_sent: false`), as AutoMod does."""
        self.drop_rules.append((matches, code, message))

    # --- driving the websocket ---

    async def chat(
        self,
        channel: str,
        sender: str,
        text: str,
        *,
        badges: list[str] = (),  # type: ignore[assignment]
        mention: str | None = None,
    ) -> str:
        """A chat message from `sender` in `channel`'s chat; returns its message id."""
        broadcaster, chatter = self.user(channel), self.user(sender)
        return await self._chat_notification(broadcaster, chatter, text, badges=list(badges), mention=mention)

    async def whisper(self, sender: str, text: str) -> str:
        frm = self.user(sender)
        whisper_id = uuid.uuid4().hex
        event = {
            "from_user_id": frm.id,
            "from_user_login": frm.login,
            "from_user_name": frm.name,
            "to_user_id": self.bot.id,
            "to_user_login": self.bot.login,
            "to_user_name": self.bot.name,
            "whisper_id": whisper_id,
            "whisper": {"text": text},
        }
        await self._deliver("user.whisper.message", {"user_id": self.bot.id}, event)
        return whisper_id

    async def session_reconnect(self, conn: _Conn | None = None) -> _Conn:
        """Ask the client to move to a new connection; the session and its subscriptions carry over."""
        conn = conn or self.live()[-1]
        session = {
            "id": conn.session_id,
            "status": "reconnecting",
            "keepalive_timeout_seconds": None,
            "reconnect_url": f"{self.ws_url}?reconnect={conn.session_id}",
            "connected_at": _now_rfc3339(),
        }
        await conn.ws.send_str(json.dumps(self._message("session_reconnect", {"session": session})))
        return conn

    async def drop(self, conn: _Conn | None = None) -> _Conn:
        """Close a connection the way a network failure or a Twitch restart does."""
        conn = conn or self.live()[-1]
        self._end_session(conn.session_id)
        await conn.ws.close(code=1011, message=b"going away")
        conn.closed.set()
        await self._notify()
        return conn

    # --- HTTP ---

    def _record(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path))

    def _bearer_user(self, request: web.Request) -> User | str | None:
        """The user a Bearer token belongs to, "app" for an app token, None when invalid."""
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").removeprefix("OAuth ").strip()
        if token in self.app_tokens:
            return "app"
        return next((u for u in self.users.values() if u.token and u.token == token), None)

    @staticmethod
    def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        reason = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            409: "Conflict",
            429: "Too Many Requests",
        }.get(status, "Error")
        return web.json_response(
            {"error": reason, "status": status, "message": message}, status=status, headers=headers
        )

    def _check_client(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Client-Id") != CLIENT_ID:
            return self._error(401, "invalid client id")
        return None

    async def _token(self, request: web.Request) -> web.Response:
        self._record(request)
        q = request.query
        if q.get("client_id") != CLIENT_ID or q.get("client_secret") != CLIENT_SECRET:
            return self._error(403, "invalid client secret")
        grant = q.get("grant_type")
        if grant == "client_credentials":
            token = f"app-{uuid.uuid4().hex}"
            self.app_tokens.add(token)
            return web.json_response({"access_token": token, "expires_in": 5_000_000, "token_type": "bearer"})
        if grant == "refresh_token":
            user = next((u for u in self.users.values() if u.refresh and u.refresh == q.get("refresh_token")), None)
            if user is None:
                return self._error(400, "Invalid refresh token")
            user.token = f"user-{uuid.uuid4().hex}"
            return web.json_response(
                {
                    "access_token": user.token,
                    "refresh_token": user.refresh,
                    "expires_in": 14_000,
                    "scope": user.scopes,
                    "token_type": "bearer",
                }
            )
        return self._error(400, "unsupported grant type")

    async def _validate(self, request: web.Request) -> web.Response:
        self._record(request)
        who = self._bearer_user(request)
        if who is None:
            return self._error(401, "invalid access token")
        if who == "app":
            return web.json_response({"client_id": CLIENT_ID, "scopes": [], "expires_in": 5_000_000})
        assert isinstance(who, User)
        return web.json_response(
            {"client_id": CLIENT_ID, "login": who.login, "scopes": who.scopes, "user_id": who.id, "expires_in": 14_000}
        )

    async def _users(self, request: web.Request) -> web.Response:
        self._record(request)
        if (bad := self._check_client(request)) or self._bearer_user(request) is None:
            return bad or self._error(401, "invalid access token")
        ids, logins = request.query.getall("id", []), [s.lower() for s in request.query.getall("login", [])]
        found = [u for u in self.users.values() if u.id in ids or u.login in logins]
        return web.json_response(
            {
                "data": [
                    {
                        "id": u.id,
                        "login": u.login,
                        "display_name": u.name,
                        "type": "",
                        "broadcaster_type": "",
                        "description": "",
                        "profile_image_url": "https://static-cdn.jtvnw.net/p.png",
                        "offline_image_url": "",
                        "view_count": 0,
                        "created_at": "2020-01-01T00:00:00Z",
                    }
                    for u in found
                ]
            }
        )

    async def _subscribe(self, request: web.Request) -> web.Response:
        self._record(request)
        body = await request.json()
        self.subscription_requests.append(body)
        who = self._bearer_user(request)
        if (bad := self._check_client(request)) or not isinstance(who, User):
            return bad or self._error(401, "websocket subscriptions need a user access token")
        session_id = body.get("transport", {}).get("session_id")
        if not any(c.session_id == session_id for c in self.live()):
            return self._error(400, "websocket transport session does not exist or has already disconnected")
        condition = body.get("condition", {})
        if condition.get("user_id") != who.id:
            return self._error(403, "condition user_id does not match the token")
        if any(
            s.type == body["type"] and s.condition == condition and s.session_id == session_id
            for s in self.subscriptions
        ):
            self.duplicate_subscriptions += 1
            return self._error(409, "subscription already exists")
        sub = Subscription(
            id=uuid.uuid4().hex,
            type=body["type"],
            version=body["version"],
            condition=condition,
            session_id=session_id,
            user_id=who.id,
        )
        self.subscriptions.append(sub)
        await self._notify()
        return web.json_response(
            {
                "data": [
                    {
                        "id": sub.id,
                        "status": "enabled",
                        "type": sub.type,
                        "version": sub.version,
                        "condition": condition,
                        "created_at": _now_rfc3339(),
                        "cost": 0,
                        "transport": {"method": "websocket", "session_id": session_id, "connected_at": _now_rfc3339()},
                    }
                ],
                "total": len(self.subscriptions),
                "total_cost": 0,
                "max_total_cost": 10,
            },
            status=202,
        )

    async def _chat_message(self, request: web.Request) -> web.Response:
        self._record(request)
        body = await request.json()
        post = ChatPost(at=time.monotonic(), wall=time.time(), body=body, status=200)
        self.chat_posts.append(post)
        try:
            who = self._bearer_user(request)
            if (bad := self._check_client(request)) or not isinstance(who, User):
                post.status = 401
                return bad or self._error(401, "invalid access token")
            if self.chat_failures:
                status, reset_in = self.chat_failures.pop(0)
                post.status = status
                post.reset = reset = int(time.time() + reset_in + 0.999)  # whole seconds, rounded up
                return self._error(
                    status,
                    "rate limited",
                    headers={"Ratelimit-Limit": "20", "Ratelimit-Remaining": "0", "Ratelimit-Reset": str(reset)},
                )
            if body.get("sender_id") != who.id:
                post.status = 403
                return self._error(403, "sender_id does not match the token")
            text = str(body.get("message", ""))
            if not text.strip():
                post.status = 400
                return self._error(400, 'Missing required parameter "message"')
            if len(text) > self.max_message:  # documented as 422, answered as this 400 (twitchdev/issues#904)
                post.status = 400
                return self._error(
                    400,
                    "The request's input was not valid. Please see the endpoint's documentation for possible reasons.",
                )
            broadcaster = self.users.get(str(body.get("broadcaster_id")))
            if broadcaster is None:
                post.status = 400
                return self._error(400, "unknown broadcaster")
            if dropped := self._drop_reason(who, broadcaster, text, post.at):
                post.drop_code = dropped["code"]
                return web.json_response({"data": [{"message_id": "", "is_sent": False, "drop_reason": dropped}]})
            self._last_posted[(who.id, broadcaster.id)] = (text, post.at)
            post.message_id = uuid.uuid4().hex
            if self.echo_own_messages:
                task = asyncio.get_running_loop().create_task(
                    self._chat_notification(broadcaster, who, text, badges=[], mention=None, message_id=post.message_id)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return web.json_response({"data": [{"message_id": post.message_id, "is_sent": True, "drop_reason": None}]})
        finally:
            await self._notify()

    def _drop_reason(self, sender: User, broadcaster: User, text: str, at: float) -> dict[str, str] | None:
        last = self._last_posted.get((sender.id, broadcaster.id))
        if (
            self.duplicate_window is not None
            and last is not None
            and last[0] == text
            and at - last[1] < self.duplicate_window
        ):
            return {
                "code": "msg_duplicate",
                "message": "Your message is identical to the one you sent less than 30 seconds ago.",
            }
        for matches, code, message in self.drop_rules:
            if matches(text):
                return {"code": code, "message": message}
        return None

    async def _whisper(self, request: web.Request) -> web.Response:
        self._record(request)
        who = self._bearer_user(request)
        if (bad := self._check_client(request)) or not isinstance(who, User):
            return bad or self._error(401, "invalid access token")
        body = await request.json()
        if request.query.get("from_user_id") != who.id:
            return self._error(403, "from_user_id does not match the token")
        self.whispers.append({"to": request.query.get("to_user_id"), "message": body.get("message", "")})
        await self._notify()
        return web.Response(status=204)

    # --- websocket ---

    def _message(self, kind: str, payload: dict[str, Any], **meta: str) -> dict[str, Any]:
        return {
            "metadata": {
                "message_id": uuid.uuid4().hex,
                "message_type": kind,
                "message_timestamp": _now_rfc3339(),
                **meta,
            },
            "payload": payload,
        }

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self._record(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        resumed = request.query.get("reconnect")
        session_id = resumed if resumed else uuid.uuid4().hex
        conn = _Conn(ws=ws, session_id=session_id, number=len(self.connections) + 1)
        self.connections.append(conn)
        session = {
            "id": session_id,
            "status": "connected",
            "connected_at": _now_rfc3339(),
            "keepalive_timeout_seconds": 10,
            "reconnect_url": None,
            "recovery_url": None,
        }
        await ws.send_str(json.dumps(self._message("session_welcome", {"session": session})))
        if resumed:
            # The old connection of this session stops receiving once the new one is welcomed.
            for old in self.connections:
                if old is not conn and old.session_id == session_id:
                    old.closed.set()
        await self._notify()
        keepalive = asyncio.get_running_loop().create_task(self._keepalive(conn))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    # Twitch forbids client messages: it closes with 4001.
                    await ws.close(code=4001, message=b"client sent inbound traffic")
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
            conn.closed.set()
            # A session ends when its last connection closes, unless a newer one took it over.
            if not any(c.session_id == session_id and not c.closed.is_set() for c in self.connections):
                self._end_session(session_id)
            await self._notify()
        return ws

    def _end_session(self, session_id: str) -> None:
        self.subscriptions = [s for s in self.subscriptions if s.session_id != session_id]

    async def _keepalive(self, conn: _Conn) -> None:
        while not conn.ws.closed:
            await asyncio.sleep(self.keepalive_interval)
            if not conn.ws.closed and not conn.closed.is_set():
                await conn.ws.send_str(json.dumps(self._message("session_keepalive", {})))

    async def _chat_notification(
        self,
        broadcaster: User,
        chatter: User,
        text: str,
        *,
        badges: list[str],
        mention: str | None,
        message_id: str | None = None,
    ) -> str:
        message_id = message_id or uuid.uuid4().hex
        fragments: list[dict[str, Any]] = []
        if mention:
            target = self.user(mention)
            fragments.append(
                {
                    "type": "mention",
                    "text": f"@{target.login}",
                    "cheermote": None,
                    "emote": None,
                    "mention": {"user_id": target.id, "user_login": target.login, "user_name": target.name},
                }
            )
            rest = text.removeprefix(f"@{target.login}")
            if rest:
                fragments.append({"type": "text", "text": rest, "cheermote": None, "emote": None, "mention": None})
        else:
            fragments.append({"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None})
        event = {
            "broadcaster_user_id": broadcaster.id,
            "broadcaster_user_login": broadcaster.login,
            "broadcaster_user_name": broadcaster.name,
            "chatter_user_id": chatter.id,
            "chatter_user_login": chatter.login,
            "chatter_user_name": chatter.name,
            "message_id": message_id,
            "message": {"text": text, "fragments": fragments},
            "color": "#1E90FF",
            "badges": [{"set_id": b, "id": "1", "info": ""} for b in badges],
            "message_type": "text",
            "cheer": None,
            "reply": None,
            "channel_points_custom_reward_id": None,
            "channel_points_animation_id": None,
            "source_broadcaster_user_id": None,
            "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None,
            "source_message_id": None,
            "source_badges": None,
            "is_source_only": None,
        }
        await self._deliver("channel.chat.message", None, event, broadcaster_id=broadcaster.id)
        return message_id

    async def _deliver(
        self,
        sub_type: str,
        condition: dict[str, str] | None,
        event: dict[str, Any],
        *,
        broadcaster_id: str | None = None,
    ) -> None:
        """Send a notification once per matching subscription, on its session's current connection."""
        for sub in list(self.subscriptions):
            if sub.type != sub_type:
                continue
            if broadcaster_id is not None and sub.condition.get("broadcaster_user_id") != broadcaster_id:
                continue
            if condition is not None and any(sub.condition.get(k) != v for k, v in condition.items()):
                continue
            conn = next(
                (
                    c
                    for c in reversed(self.connections)
                    if c.session_id == sub.session_id and not c.closed.is_set() and not c.ws.closed
                ),
                None,
            )
            if conn is None:
                continue
            payload = {
                "subscription": {
                    "id": sub.id,
                    "status": "enabled",
                    "type": sub.type,
                    "version": sub.version,
                    "cost": 0,
                    "condition": sub.condition,
                    "transport": {"method": "websocket", "session_id": sub.session_id},
                    "created_at": _now_rfc3339(),
                },
                "event": event,
            }
            await conn.ws.send_str(
                json.dumps(
                    self._message("notification", payload, subscription_type=sub_type, subscription_version=sub.version)
                )
            )
