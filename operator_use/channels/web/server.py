"""The web chat's HTTP side (aiohttp): the page, its assets and the websocket, all behind the token.

Imported only when the channel connects, so `operator-use --help` never loads aiohttp.

Authentication: the address printed at start-up carries `?token=...`; a valid token is exchanged for an
HttpOnly, SameSite=Strict cookie and the browser is redirected to `/` (the token leaves the address bar).
Every later request (page, assets, websocket) needs that cookie, or an `Authorization: Bearer` header for
programs. The websocket also checks the Origin header against the Host (no other site's page can open a
socket with the owner's cookie), and, unless remote access is enabled, that the Host is a loopback name
(a DNS-rebinding page never gets in either). The access log is off: the first request's URL holds the token.

A page whose cookie no longer matches (the token file was deleted, or a configured token changed) would
retry forever: its socket is accepted and closed at once with code 4401, which tells it to stop and ask
for the new address. Refusals are warned about once per address, and at most once a minute in all
(`refusals.py`), the rest at debug level: retries, or a flood of bogus cookies, cannot fill the log.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from . import frames
from .config import is_loopback
from .frames import AudioFrame, BadFrame, frame_size, parse_frame
from .refusals import RefusalLog

if TYPE_CHECKING:
    from .config import WebConfig
    from .hub import ChatHub

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# The page's files: a plain name (no directory, no leading dot) of a file in static/ with one of these
# endings; nothing else of the file system is ever reached from a URL.
_ASSET_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_ASSET_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")
_CHAT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_YEAR = 365 * 24 * 3600
# Close code of a socket refused for its token: the page stops reconnecting (4000-4999: the application's).
STALE_TOKEN_CLOSE = 4401

# The page runs our script only and never loads anything from elsewhere: a model-written image link
# cannot phone home, and no other site can frame the page.
# Voice notes play from blob: URLs the page makes from the socket's bytes (never from another site).
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_REFUSED = """<!doctype html><meta charset="utf-8"><title>operator-use</title>
<body style="font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;color:#333">
<h1>{title}</h1><p>{text}</p></body>"""


def audio_frame_limit(config: WebConfig) -> int:
    """Largest audio frame in bytes: the note's base64 (4/3 of it) plus room for the JSON around it."""
    return frames.audio_frame_limit(config.max_audio_bytes)


def frame_cap(config: WebConfig) -> int:
    """Frames up to this size are read (and answered with an error when too big); beyond it aiohttp
    closes the socket (1009) before buffering an unbounded frame."""
    return max(config.max_message_bytes * 16, audio_frame_limit(config) * 2)


def build_app(channel: ChatHub) -> web.Application:
    server = _Server(channel)
    app = web.Application(middlewares=[_security_headers])
    app.router.add_get("/", server.page)
    app.router.add_get("/static/{name}", server.asset)
    app.router.add_get("/ws", server.websocket)
    return app


@web.middleware
async def _security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    if not isinstance(response, web.WebSocketResponse):
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def _refused(status: int, title: str, text: str) -> web.Response:
    return web.Response(
        status=status,
        text=_REFUSED.format(title=title, text=text),
        content_type="text/html",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


class _Server:
    def __init__(self, channel: ChatHub) -> None:
        self.channel = channel
        self.config = channel.web_config
        self.refusals = RefusalLog()

    # Cookies are per host, not per port: the port in their names keeps two instances apart.
    @property
    def token_cookie(self) -> str:
        return f"opu_token_{self.channel.port}"

    @property
    def chat_cookie(self) -> str:
        return f"opu_chat_{self.channel.port}"

    def _token_ok(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.channel.token.encode())

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
        return self._token_ok(request.cookies.get(self.token_cookie)) or self._token_ok(bearer)

    def _host_ok(self, request: web.Request) -> bool:
        if self.config.allow_remote:
            return True
        host = urlsplit(f"//{request.host}").hostname or ""
        return is_loopback(host)

    def _set_cookie(self, response: web.StreamResponse, name: str, value: str) -> None:
        response.set_cookie(name, value, max_age=_YEAR, path="/", httponly=True, samesite="Strict")

    def _chat_id(self, request: web.Request) -> str | None:
        chat = request.query.get("chat") or request.cookies.get(self.chat_cookie)
        return chat if chat and _CHAT_RE.match(chat) else None

    async def page(self, request: web.Request) -> web.StreamResponse:
        if not self._host_ok(request):
            return _refused(403, "Refused", "This address is not served here.")
        if "token" in request.query:
            if not self._token_ok(request.query["token"]):
                log.warning("web chat: wrong token from %s", request.remote)
                return _refused(
                    403,
                    "Wrong token",
                    "This link's token is not valid. Open the address printed when operator-use started.",
                )
            # Trade the token for a cookie and take it out of the address bar (and the browser history).
            response = web.Response(status=303, headers={"Location": "/"})
            self._set_cookie(response, self.token_cookie, self.channel.token)
            if self._chat_id(request) is None:
                self._set_cookie(response, self.chat_cookie, secrets.token_urlsafe(12))
            return response
        if not self._authorized(request):
            return _refused(
                401,
                "Token needed",
                "Open the address operator-use printed when it started: it ends with <code>?token=...</code>.",
            )
        page = web.FileResponse(STATIC_DIR / "index.html")
        if self._chat_id(request) is None:
            self._set_cookie(page, self.chat_cookie, secrets.token_urlsafe(12))
        return page

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not self._authorized(request) or not self._host_ok(request):
            return _refused(401, "Token needed", "")
        content_type = _ASSET_TYPES.get(Path(name).suffix.lower())
        if content_type is None or not _ASSET_RE.match(name) or ".." in name:
            raise web.HTTPNotFound()
        path = STATIC_DIR / name
        if not await asyncio.to_thread(path.is_file):
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": content_type})

    def _log_refusal(self, request: web.Request) -> None:
        """A warning per address, at most one a minute (`RefusalLog`), the rest at debug: keyed on nothing
        the client chooses, so neither a stale page retrying nor a new bogus cookie per try fills the log."""
        address = request.remote or "unknown"
        suppressed = self.refusals.refused(address)
        if suppressed is None:
            log.debug("web chat: websocket without a valid token from %s (not warned again)", address)
            return
        log.warning(
            "web chat: websocket without a valid token from %s (a page of an earlier start? it was told to "
            "open the address printed at start-up)%s",
            address,
            f"; {suppressed} more refused since the last warning" if suppressed else "",
        )

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        same_origin = origin is not None and (
            urlsplit(origin).netloc == request.host and urlsplit(origin).scheme in ("http", "https")
        )
        if not self._authorized(request):
            self._log_refusal(request)
            if same_origin and self._host_ok(request):
                # One of our pages: a refused handshake looks like a network error to it and it would
                # retry forever; a socket closed with our code tells it why.
                refused = web.WebSocketResponse()
                await refused.prepare(request)
                await refused.close(code=STALE_TOKEN_CLOSE, message=b"token changed: open the new address")
                return refused
            return _refused(401, "Token needed", "")
        if origin is not None and not same_origin:
            log.warning("web chat: websocket from foreign origin %r refused", origin)
            return _refused(403, "Foreign origin", "")
        if not self._host_ok(request):
            return _refused(403, "Refused", "")
        chat = self._chat_id(request) or "default"
        limit = self.config.max_message_bytes
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=frame_cap(self.config))
        await ws.prepare(request)
        try:
            await self.channel.attach(chat, ws)  # inside: a tab gone while it is sent the history is detached
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await self._frame(chat, ws, frame.data, limit)
                elif frame.type == WSMsgType.BINARY:
                    await _error(ws, "binary frames are not understood; send JSON text frames")
                elif frame.type == WSMsgType.ERROR:
                    log.info("web chat socket closed with error: %r", ws.exception())
        finally:
            self.channel.detach(chat, ws)
        return ws

    async def _frame(self, chat: str, ws: web.WebSocketResponse, data: str, limit: int) -> None:
        # Nothing the page sends may end the handler: every problem is answered with an error event.
        try:
            parse = functools.partial(
                parse_frame, data, max_message_bytes=limit, max_audio_bytes=self.config.max_audio_bytes
            )
            # Larger than a text message: a voice note's base64, decoded off the event loop.
            frame = parse() if frame_size(data) <= limit else await asyncio.to_thread(parse)
            if isinstance(frame, AudioFrame):
                await self.channel.receive_audio(chat, frame.data, frame.mime)
            else:
                await self.channel.receive(chat, frame.text)
        except BadFrame as exc:
            await _error(ws, exc.reason)
        except Exception:
            log.exception("web chat: handling a frame failed")
            await _error(ws, "the message could not be handled; see the agent's log")


async def _error(ws: web.WebSocketResponse, text: str) -> None:
    try:
        await ws.send_json({"type": "error", "error": text})
    except (ConnectionError, RuntimeError) as e:  # the socket went away meanwhile
        log.debug("web chat: could not send error event: %r", e)
