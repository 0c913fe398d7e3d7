"""A fake Telegram Bot API server on 127.0.0.1, speaking the real HTTP protocol.

python-telegram-bot is pointed at it with `ApplicationBuilder().base_url(fake.base_url)` and
`.base_file_url(fake.base_file_url)`. What it implements, as the Bot API does:

- `POST /bot<token>/<method>` with form-encoded, multipart (file uploads) or JSON parameters; complex
  values (reply_parameters, commands) arrive JSON-encoded; replies are `{"ok": true, "result": ...}` or
  `{"ok": false, "error_code": ..., "description": ...[, "parameters": {...}]}`.
- `getUpdates` long polling: honours `timeout` (waits for an update or the timeout) and forgets every update
  whose id is below `offset` (confirmed); 409 while a webhook is set.
- `getMe`, `deleteWebhook`, `setWebhook`, `sendMessage` (HTML parse mode checked: an unsupported or
  unbalanced tag is "can't parse entities"; over 4096 UTF-16 code units of visible text, as Telegram counts
  entity offsets, "message is too long"), `editMessageText` ("message is not modified" when the text is
  unchanged, "MESSAGE_TOO_LONG"), `sendChatAction`, `getFile` + `GET /file/bot<token>/<file_path>`,
  `sendVoice`, `sendPhoto`, `sendDocument`, `sendAudio`, `setMyCommands`.
- Fault injection: `flood(n, retry_after)` answers the next n send/edit calls with 429 and
  `parameters.retry_after`; `go_down()` closes the listener (open connections dropped) and `come_back()`
  listens again on the same port, updates queued meanwhile kept; `redeliver(update_id)` queues an update
  again with its old id, as after a restart whose offset was never confirmed; `push_update(...)` queues
  any update as given, a malformed one (a message without `message_id` or `date`) included;
  `delete_message(chat_id, message_id)` deletes a bot message as a user would (edits then find nothing).
- Inline keyboards: `sendMessage`'s `reply_markup` is kept on the message (`BotMessage.reply_markup`);
  `press(user, message, callback_data)` queues the `callback_query` update a user's press makes (delivered
  only when `allowed_updates` lets it through), and `answerCallbackQuery` is recorded in `answered`
  (a query answered twice, or one never sent, is refused as Telegram does); `editMessageText` without
  `reply_markup` takes the keyboard off.

Tests drive it as users would (`send_text`, `send_voice`, ...) and read what the bot did (`sent`,
`calls`), waiting with `wait_for(predicate)`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aiohttp import web

from ..support.serve import serve
from ..support.waiting import Observable

TOKEN = "123456789:AAtest-token_SECRET_value"
BOT_ID = 123456789
MAX_TEXT = 4096
MAX_DOWNLOAD = 20 * 1024 * 1024

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200


@dataclass
class BotMessage:
    """A message the bot posted (text, voice, photo or document) as the chat shows it."""

    chat_id: int
    message_id: int
    kind: str
    text: str = ""  # visible text (tags removed, entities unescaped)
    html: str | None = None  # what was sent, when parse_mode was HTML
    thread_id: int | None = None
    reply_to: int | None = None
    edits: list[str] = field(default_factory=list)
    edit_times: list[float] = field(default_factory=list)
    data: bytes = b""
    mime: str | None = None
    file_name: str | None = None
    sent_at: float = 0.0
    reply_markup: dict[str, Any] | None = None  # an inline keyboard, as sent

    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row after row."""
        return [b for row in (self.reply_markup or {}).get("inline_keyboard", []) for b in row]


# --- HTML parse mode, as strict as Telegram's ------------------------------------------------

_ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
    "br",
}


class _TelegramHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.stack: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS:
            self.error = self.error or f'Unsupported start tag "{tag}"'
        elif tag != "br":
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.error = self.error or f'Unmatched end tag "{tag}"'
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible_text(html: str) -> str:
    """The text Telegram shows for an HTML message; raises ApiError(400) where Telegram would."""
    parser = _TelegramHTML()
    parser.feed(html)
    parser.close()
    if parser.stack and not parser.error:
        parser.error = f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"'
    if parser.error:
        raise ApiError(400, f"Bad Request: can't parse entities: {parser.error}")
    return "".join(parser.text)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram detects by itself in a user's text: /commands and @mentions."""
    entities = []
    command = re.match(r"/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?", text)
    if command:
        entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command.group())})
    for m in re.finditer(r"(?<![\w/])@[A-Za-z][A-Za-z0-9_]{3,31}", text):
        entities.append({"type": "mention", "offset": _utf16_len(text[: m.start()]), "length": _utf16_len(m.group())})
    return entities


# --- the server ------------------------------------------------------------------------------


class FakeTelegram(Observable):
    def __init__(
        self,
        *,
        token: str = TOKEN,
        bot_username: str = "operator_test_bot",
        host: str = "127.0.0.1",
        local_dir: Path | None = None,
    ) -> None:
        self.token = token
        # As a local Bot API server started with --local: files live on disk and getFile gives absolute paths.
        self.local_dir = local_dir
        self.bot = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Operator",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.host = host
        self.port = 0
        self.calls: list[Call] = []
        self.sent: list[BotMessage] = []
        self.deleted: list[BotMessage] = []  # bot messages a user deleted (delete_message)
        self.commands: list[dict[str, Any]] | None = None
        self.webhook: dict[str, Any] | None = None
        self.files: dict[str, tuple[bytes, str]] = {}  # file_id -> (content, file_path)
        self._pending: list[dict[str, Any]] = []  # updates not confirmed yet, by id
        self._all_updates: dict[int, dict[str, Any]] = {}
        self._update_ids = itertools.count(1000)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._file_ids = itertools.count(1)
        self._flood: list[tuple[frozenset[str], int]] = []  # (methods, retry_after) per injected 429
        self._queries: dict[str, dict[str, Any]] = {}  # callback query id -> the query, until answered
        self.answered: list[dict[str, Any]] = []  # answerCallbackQuery parameters, in order
        self._changed = asyncio.Condition()
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.down = False

    # --- addresses ---

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://{self.host}:{self.port}/file/bot"

    # --- lifecycle ---

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        # A short shutdown grace: in-flight long polls are cut off as when a server dies.
        # The same port on come_back(), so the client finds the server again.
        self._runner, self.port = await serve(app, self.host, self.port, shutdown_timeout=0.2)
        self.down = False
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def go_down(self) -> None:
        """Stop listening and drop open connections; state and queued updates survive."""
        self.down = True
        await self.stop()

    async def come_back(self) -> None:
        await self.start()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- waiting and reading ---

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (ok is None or (c.status == 200) == ok)]

    def messages_in(self, chat_id: int, thread_id: int | None = None, kind: str | None = None) -> list[BotMessage]:
        return [
            m
            for m in self.sent
            if m.chat_id == chat_id and m.thread_id == thread_id and (kind is None or m.kind == kind)
        ]

    @property
    def pending_updates(self) -> int:
        return len(self._pending)

    # --- fault injection ---

    def flood(
        self, count: int, retry_after: int = 1, methods: tuple[str, ...] = ("sendMessage", "editMessageText")
    ) -> None:
        """The next `count` calls to `methods` get 429 Too Many Requests with parameters.retry_after."""
        self._flood.extend([(frozenset(methods), retry_after)] * count)

    def delete_message(self, chat_id: int, message_id: int) -> BotMessage:
        """A user deletes one of the bot's messages: it leaves `sent` (kept in `deleted`), and editing it gets
        "message to edit not found", as on Telegram."""
        msg = next(m for m in self.sent if m.chat_id == chat_id and m.message_id == message_id)
        self.sent.remove(msg)
        self.deleted.append(msg)
        self._messages.pop((chat_id, message_id), None)
        return msg

    def redeliver(self, update_id: int) -> None:
        self._pending.append(self._all_updates[update_id])
        self._pending.sort(key=lambda u: u["update_id"])
        self._wake()

    # --- users acting ---

    @staticmethod
    def user(user_id: int, username: str | None = None, first_name: str = "User") -> dict[str, Any]:
        u: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            u["username"] = username
        return u

    def private_chat(self, user: dict[str, Any]) -> dict[str, Any]:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        if "username" in user:
            chat["username"] = user["username"]
        return chat

    @staticmethod
    def group(chat_id: int, title: str = "Group", *, forum: bool = False) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": title}
        if forum:
            chat["is_forum"] = True
        return chat

    def send_text(self, chat: dict[str, Any], user: dict[str, Any], text: str, **kw: Any) -> int:
        return self._user_message(chat, user, {"text": text, "entities": auto_entities(text)}, **kw)

    def send_voice(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        data: bytes,
        *,
        duration: int = 1,
        mime: str = "audio/ogg",
        **kw: Any,
    ) -> int:
        voice = {**self._store_file(data, "voice", "oga"), "duration": duration, "mime_type": mime}
        return self._user_message(chat, user, {"voice": voice}, **kw)

    def send_audio(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        data: bytes,
        *,
        duration: int = 1,
        mime: str = "audio/mpeg",
        file_name: str = "song.mp3",
        **kw: Any,
    ) -> int:
        audio = {
            **self._store_file(data, "music", "mp3"),
            "duration": duration,
            "mime_type": mime,
            "file_name": file_name,
        }
        return self._user_message(chat, user, {"audio": audio}, **kw)

    def send_photo(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        sizes: list[tuple[int, bytes]],
        caption: str | None = None,
        **kw: Any,
    ) -> int:
        """`sizes`: (width, jpeg bytes) from smallest to largest, as Telegram lists them."""
        photo = [{**self._store_file(data, "photos", "jpg"), "width": w, "height": w} for w, data in sizes]
        return self._user_message(chat, user, {"photo": photo, **self._caption(caption)}, **kw)

    def send_document(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        data: bytes,
        file_name: str,
        mime: str = "application/octet-stream",
        caption: str | None = None,
        **kw: Any,
    ) -> int:
        doc = {
            **self._store_file(data, "documents", file_name.rsplit(".", 1)[-1]),
            "file_name": file_name,
            "mime_type": mime,
        }
        return self._user_message(chat, user, {"document": doc, **self._caption(caption)}, **kw)

    def press(self, user: dict[str, Any], message: BotMessage, callback_data: str) -> str:
        """A user presses the button with `callback_data` under one of the bot's messages; returns the query id."""
        assert any(b.get("callback_data") == callback_data for b in message.buttons()), "no such button"
        query_id = str(next(self._update_ids) * 7919)
        query = {
            "id": query_id,
            "from": user,
            "message": {**self._message_json(message), "reply_markup": message.reply_markup},
            "chat_instance": f"ci{message.chat_id}",
            "data": callback_data,
        }
        self._queries[query_id] = query
        self.push_update({"callback_query": query})
        return query_id

    def push_update(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        update = {"update_id": update_id, **update}
        self._all_updates[update_id] = update
        self._pending.append(update)
        self._wake()
        return update_id

    def update_of(self, update_id: int) -> dict[str, Any]:
        """The update as sent, e.g. to post it to a webhook."""
        return self._all_updates[update_id]

    def message_of(self, update_id: int) -> dict[str, Any]:
        return self._all_updates[update_id]["message"]

    @staticmethod
    def _caption(caption: str | None) -> dict[str, Any]:
        return {"caption": caption, "caption_entities": auto_entities(caption)} if caption else {}

    def _store_file(self, data: bytes, folder: str, ext: str) -> dict[str, Any]:
        n = next(self._file_ids)
        file_id = f"FILE{n:04d}"
        self.files[file_id] = (data, f"{folder}/file_{n}.{ext}")
        return {"file_id": file_id, "file_unique_id": f"U{n:04d}", "file_size": len(data)}

    def _user_message(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        content: dict[str, Any],
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        self._chats[chat["id"]] = chat
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat["id"]),
            "date": int(time.time()),
            "chat": chat,
            "from": user,
            **content,
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = self._messages[(chat["id"], reply_to)]
        self._messages[(chat["id"], message["message_id"])] = message
        return self.push_update({"message": message})

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _wake(self) -> None:
        # Sync helpers cannot take the condition's lock: long polls also wait on this event.
        self._arrived.set()

    # --- HTTP ---

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, web.FileField]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, web.FileField] = {}
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.method == "POST" and request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value
                else:
                    params[key] = value
        return params, files

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params, files = await self._params(request)
        except (ValueError, json.JSONDecodeError):
            return self._error(ApiError(400, "Bad Request: invalid request body"))
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            self._maybe_flood(method)
            result = await handler(params, files)
        except ApiError as e:
            call.status = e.code
            await self._notify()
            return self._error(e)
        await self._notify()
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(e: ApiError) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": e.code, "description": e.description}
        if e.parameters:
            body["parameters"] = e.parameters
        return web.json_response(body, status=e.code)

    def _maybe_flood(self, method: str) -> None:
        for i, (methods, retry_after) in enumerate(self._flood):
            if method in methods:
                del self._flood[i]
                raise ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        for data, path in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)

    # --- methods ---

    async def _m_getMe(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        return self.bot

    async def _m_deleteWebhook(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        self.webhook = None
        if _bool(p.get("drop_pending_updates")):
            self._pending.clear()
        return True

    async def _m_setWebhook(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        if not p.get("url"):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook = {
            "url": p["url"],
            "secret_token": p.get("secret_token"),
            "allowed_updates": _json(p.get("allowed_updates")),
        }
        return True

    async def _m_getUpdates(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        if self.webhook:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset, timeout, limit = int(p.get("offset") or 0), float(p.get("timeout") or 0), int(p.get("limit") or 100)
        allowed = _json(p.get("allowed_updates"))
        if offset:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]

        def ready() -> list[dict[str, Any]]:
            out = [u for u in self._pending if not allowed or any(k in u for k in allowed)]
            return out[:limit]

        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return ready()

    async def _m_sendMessage(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        chat = self._chat(p)
        text = p.get("text") or ""
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        shown = visible_text(text) if p.get("parse_mode") == "HTML" else text
        if _utf16_len(shown) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        markup = _json(p.get("reply_markup"))
        if markup is not None:
            _check_keyboard(markup)
        msg = self._post(
            chat, p, "text", text=shown, html=text if p.get("parse_mode") == "HTML" else None, reply_markup=markup
        )
        out = {**self._message_json(msg), "text": shown}
        if markup is not None:
            out["reply_markup"] = markup
        return out

    async def _m_answerCallbackQuery(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        if self._queries.pop(str(p.get("callback_query_id")), None) is None:
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.answered.append(p)
        return True

    async def _m_editMessageText(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        chat = self._chat(p)
        msg = next(
            (
                m
                for m in self.sent
                if m.chat_id == chat["id"] and m.message_id == int(p.get("message_id") or 0) and m.kind == "text"
            ),
            None,
        )
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        text = p.get("text") or ""
        html = text if p.get("parse_mode") == "HTML" else None
        shown = visible_text(text) if html is not None else text
        if _utf16_len(shown) > MAX_TEXT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        markup = _json(p.get("reply_markup"))  # absent: the inline keyboard goes, as on Telegram
        if markup is not None:
            _check_keyboard(markup)
        if shown == msg.text and html == msg.html and markup == msg.reply_markup:
            raise ApiError(400, NOT_MODIFIED)
        msg.text, msg.html, msg.reply_markup = shown, html, markup
        msg.edits.append(shown)
        msg.edit_times.append(time.monotonic())
        return {**self._message_json(msg), "text": shown, "edit_date": int(time.time())}

    async def _m_sendChatAction(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        self._chat(p)
        if p.get("action") not in (
            "typing",
            "upload_photo",
            "record_voice",
            "upload_voice",
            "upload_document",
            "record_video",
            "upload_video",
            "choose_sticker",
            "find_location",
        ):
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _m_getFile(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        file_id = p.get("file_id", "")
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        data, path = self.files[file_id]
        if self.local_dir is not None:
            local = self.local_dir / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            return {
                "file_id": file_id,
                "file_unique_id": "U" + file_id,
                "file_size": len(data),
                "file_path": str(local),
            }
        if len(data) > MAX_DOWNLOAD:
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": file_id, "file_unique_id": "U" + file_id, "file_size": len(data), "file_path": path}

    async def _m_sendVoice(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        return await self._media(p, f, "voice")

    async def _m_sendAudio(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        return await self._media(p, f, "audio")

    async def _m_sendPhoto(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        return await self._media(p, f, "photo")

    async def _m_sendDocument(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        return await self._media(p, f, "document")

    async def _m_setMyCommands(self, p: dict[str, Any], f: dict[str, Any]) -> Any:
        commands = _json(p.get("commands"))
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        for c in commands:
            if (
                not re.fullmatch(r"[a-z0-9_]{1,32}", str(c.get("command", "")))
                or not 1 <= len(c.get("description", "")) <= 256
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands = commands
        return True

    # --- helpers ---

    def _chat(self, p: dict[str, Any]) -> dict[str, Any]:
        try:
            chat_id = int(p.get("chat_id", ""))
        except ValueError:
            raise ApiError(400, "Bad Request: chat not found") from None
        if chat_id not in self._chats:
            raise ApiError(400, "Bad Request: chat not found")
        thread = p.get("message_thread_id")
        if thread is not None and not self._chats[chat_id].get("is_forum"):
            raise ApiError(400, "Bad Request: message thread not found")
        return self._chats[chat_id]

    def _post(self, chat: dict[str, Any], p: dict[str, Any], kind: str, **fields: Any) -> BotMessage:
        reply = _json(p.get("reply_parameters"))
        reply_to = int(reply["message_id"]) if isinstance(reply, dict) else None
        if (
            reply_to is not None
            and (chat["id"], reply_to) not in self._messages
            and not reply.get("allow_sending_without_reply")
        ):
            raise ApiError(400, "Bad Request: message to be replied not found")
        thread = p.get("message_thread_id")
        msg = BotMessage(
            chat_id=chat["id"],
            message_id=self._next_message_id(chat["id"]),
            kind=kind,
            thread_id=int(thread) if thread is not None else None,
            reply_to=reply_to,
            sent_at=time.monotonic(),
            **fields,
        )
        self.sent.append(msg)
        self._messages[(chat["id"], msg.message_id)] = self._message_json(msg)
        return msg

    def _message_json(self, msg: BotMessage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": msg.message_id,
            "date": int(time.time()),
            "chat": self._chats[msg.chat_id],
            "from": self.bot,
        }
        if msg.thread_id is not None:
            out.update(message_thread_id=msg.thread_id, is_topic_message=True)
        if msg.kind == "text":
            out["text"] = msg.text
        return out

    async def _media(self, p: dict[str, Any], f: dict[str, web.FileField], kind: str) -> Any:
        chat = self._chat(p)
        value = p.get(kind)
        upload = f.get(kind)
        if isinstance(value, str) and value.startswith("attach://"):
            upload = f.get(value[len("attach://") :])
        if upload is None:
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        data = upload.file.read()
        if kind == "voice" and upload.content_type not in ("audio/ogg", "audio/mpeg", "audio/mp4", "audio/x-m4a"):
            raise ApiError(400, "Bad Request: wrong file type for a voice message")
        msg = self._post(
            chat, p, kind, text=p.get("caption") or "", data=data, mime=upload.content_type, file_name=upload.filename
        )
        out = self._message_json(msg)
        stored = self._store_file(data, kind + "s", "bin")
        if kind in ("voice", "audio"):
            out[kind] = {**stored, "duration": int(p.get("duration") or 0), "mime_type": upload.content_type}
        elif kind == "photo":
            out["photo"] = [{**stored, "width": 1, "height": 1}]
        else:
            out["document"] = {**stored, "file_name": upload.filename, "mime_type": upload.content_type}
        return out


def _check_keyboard(markup: Any) -> None:
    """As Telegram checks an inline keyboard: callback_data of 1-64 bytes, a known style."""
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in rows:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
            if button.get("style") not in (None, "primary", "success", "danger"):
                raise ApiError(400, "Bad Request: BUTTON_STYLE_INVALID")


def _bool(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
