"""The Telegram channel: python-telegram-bot in, Bot API calls out.

A thin translation. Streaming, splitting, retries after RetryAfter, formatting and authorization live in
the gateway and the orchestrator; this adapter turns updates into IncomingMessages (inbound.py) and
performs send / edit / typing / voice with the Bot API, mapping its errors for the gateway (ptb.py).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...messages import Address, AudioPart, Button, FilePart, ImagePart, Part
from ...security.redact import install_log_redaction
from ..base import ButtonPayloads, Capabilities, Channel, ChannelError
from .config import TelegramConfig
from .inbound import Inbound, RecentIds

log = logging.getLogger(__name__)

_OGG = ("audio/ogg", "audio/opus", "audio/oga")
# Telegram's callback_data holds 1-64 bytes; a longer command goes by a key (ButtonPayloads).
_CALLBACK_BYTES = 64
_STYLES = {"primary": "primary", "danger": "danger"}  # secondary: the app's own style


def _chat(address: Address) -> int | str:
    return int(address.chat_id) if address.chat_id.lstrip("-").isdigit() else address.chat_id


def _thread(address: Address) -> int | None:
    return int(address.thread_id) if address.thread_id and address.thread_id.isdigit() else None


def _extension(mime: str) -> str:
    # The library derives the upload's content type from the file name.
    return mimetypes.guess_extension(mime.split(";")[0].strip()) or ".bin"


class TelegramChannel(Channel):
    name = "telegram"
    # 4096 after entity parsing, counted as Telegram counts entity offsets: in UTF-16 code units.
    capabilities = Capabilities(
        can_edit=True,
        max_length=4096,
        length_unit="utf16",
        edit_interval=1.0,
        voice=True,
        threads=True,
        formatting="telegram_html",
        buttons=True,
    )

    def __init__(self, config: TelegramConfig | None = None, *, workspace: Path | None = None) -> None:
        self.tg_config = config or TelegramConfig()
        super().__init__(self.tg_config)
        if workspace is None:
            from ...config import data_home

            workspace = data_home() / "workspace"
        self.workspace = workspace
        # Set by the App: the orchestrator's commands as (name, description), for Telegram's "/" menu.
        self.command_menu: Callable[[], list[tuple[str, str]]] | None = None
        self._app: Any = None
        self._webhook: Any = None  # webhook mode: the aiohttp runner of our endpoint (webhook.py)
        self._inbound: Inbound | None = None
        self._seen = RecentIds()
        self._state = "down"
        self._failures = 0
        self._lost_at = 0.0
        self._button_payloads = ButtonPayloads(lambda command: len(command.encode()) <= _CALLBACK_BYTES)

    # --- lifecycle ---

    async def connect(self) -> None:
        from . import ptb

        cfg = self.tg_config
        if cfg.token is None:
            raise ChannelError("channels.telegram.token is not set", permanent=True)
        token = cfg.token.get_secret_value()
        # The Bot API puts the token in every URL: masked in every log record, tracebacks included.
        install_log_redaction([token])
        app = ptb.build_application(cfg, token, on_update=self._on_update, on_poll_answer=self._poll_answered)
        try:
            await app.initialize()  # getMe: who we are, for mentions
            self.bot_name = app.bot.username
            self._inbound = Inbound(self.name, cfg, app.bot, self.workspace, may_fetch=self.may_fetch)
            self._app = app  # replies may go out as soon as updates flow
            await self._register_commands(app.bot)
            await app.start()
            allowed = ["message", "callback_query"]  # callback_query: button presses
            if cfg.mode == "webhook":
                # Our own endpoint, not PTB's: PTB's answers 400 to an update it cannot parse, and Telegram
                # would redeliver it forever, holding back every later update (webhook.py).
                from .webhook import start_webhook

                self._webhook = await start_webhook(app, cfg, allowed)
            else:
                # Transient failures later are retried by the library with growing pauses (1 s, x1.5, up
                # to 30 s); error_callback tells us about each, the polling request about the recovery.
                if app.updater is None:  # built with an updater in ptb.py: only a broken install gets here
                    raise ChannelError("telegram: the library was set up without an updater", permanent=True)
                await app.updater.start_polling(
                    timeout=cfg.poll_timeout,
                    allowed_updates=allowed,
                    bootstrap_retries=2,
                    error_callback=self._poll_failed,
                )
        except BaseException:
            self._app = None
            try:
                await asyncio.shield(ptb.shutdown(app))
            except Exception:
                log.debug("telegram: cleanup after a failed start failed too", exc_info=True)
            raise
        self._state = "up"
        log.info("telegram: @%s receiving by %s", app.bot.username, cfg.mode)

    async def disconnect(self) -> None:
        app, self._app = self._app, None
        self._state = "down"
        await self._stop_webhook()
        if app is not None:
            from . import ptb

            await ptb.shutdown(app)

    async def _stop_webhook(self) -> None:
        runner, self._webhook = self._webhook, None
        if runner is not None:
            await runner.cleanup()

    def status(self) -> str:
        return self._state

    async def _register_commands(self, bot: Any) -> None:
        from telegram import BotCommand

        menu = self.command_menu() if self.command_menu else [("start", "say hello"), ("help", "list the commands")]
        try:
            await bot.set_my_commands([BotCommand(name, description[:256]) for name, description in menu])
        except Exception as e:  # noqa: BLE001 — the menu is a convenience: never a reason not to start
            log.warning("telegram: could not register the command menu: %s", e)

    # --- polling health (called by the library, synchronously) ---

    def _poll_failed(self, error: Exception) -> None:
        self._failures += 1
        if self._state != "reconnecting":
            self._state, self._lost_at = "reconnecting", time.monotonic()
            log.warning("telegram: polling lost (%s); reconnecting with backoff", error)
        else:
            log.info("telegram: still reconnecting (attempt %d): %s", self._failures, error)

    def _poll_answered(self) -> None:
        if self._state == "reconnecting":
            log.info(
                "telegram: polling reconnected after %.1fs and %d failed attempts",
                time.monotonic() - self._lost_at,
                self._failures,
            )
            self._state = "up"
        self._failures = 0

    # --- inbound ---

    async def _on_update(self, update: Any) -> None:
        if not self._seen.add(update.update_id):
            log.info("telegram: update %s delivered again; ignored", update.update_id)
            return
        assert self._inbound is not None
        if update.callback_query is not None:
            await self._on_press(update.callback_query)
            return
        message = await self._inbound.translate(update)
        if message is not None:
            await self.emit(message)

    async def _on_press(self, query: Any) -> None:
        """A button pressed: answered at once, whoever pressed it (the client shows a spinner until then), then
        emitted as the presser's own message, so the orchestrator authorizes it as if they had typed it."""
        from . import ptb

        assert self._inbound is not None
        data = query.data or ""
        command = self._button_payloads.command(data)
        try:
            with ptb.translated_errors():
                await self._bot().answer_callback_query(
                    query.id, text=None if command else "This button has expired; type the command instead."
                )
        except ChannelError as e:
            log.warning("telegram: could not answer a button press: %s", e)
        message = self._inbound.press(query, command) if command else None
        if message is not None:
            await self.emit(message)

    # --- outbound ---

    def _bot(self) -> Any:
        if self._app is None:
            raise ChannelError("telegram is not connected")
        return self._app.bot

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        from . import ptb

        with ptb.translated_errors():
            message = await self._bot().send_message(
                chat_id=_chat(address),
                text=text,
                parse_mode=None if plain else "HTML",
                message_thread_id=_thread(address),
                reply_parameters=ptb.reply_parameters(reply_to),
            )
        return str(message.message_id)

    async def send_buttons(
        self, address: Address, text: str, buttons: list[Button], *, reply_to: str | None = None
    ) -> str:
        from . import ptb

        keyboard = [(b.label, self._button_payloads.payload(b.command), _STYLES.get(b.style)) for b in buttons]
        with ptb.translated_errors():
            message = await self._bot().send_message(
                chat_id=_chat(address),
                text=text,
                parse_mode="HTML",
                message_thread_id=_thread(address),
                reply_parameters=ptb.reply_parameters(reply_to),
                reply_markup=ptb.inline_keyboard(keyboard),
            )
        return str(message.message_id)

    async def close_buttons(self, address: Address, message_id: str, text: str) -> None:
        from . import ptb

        # An edit without reply_markup takes the inline keyboard off.
        with ptb.translated_errors(editing=True):
            await self._bot().edit_message_text(
                text=text, chat_id=_chat(address), message_id=int(message_id), parse_mode="HTML"
            )

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        from . import ptb

        with ptb.translated_errors(editing=True):
            await self._bot().edit_message_text(
                text=text, chat_id=_chat(address), message_id=int(message_id), parse_mode=None if plain else "HTML"
            )

    async def typing(self, address: Address) -> None:
        from . import ptb

        with ptb.translated_errors():
            await self._bot().send_chat_action(
                chat_id=_chat(address), action="typing", message_thread_id=_thread(address)
            )

    async def send_voice(self, address: Address, audio: AudioPart, *, reply_to: str | None = None) -> str:
        from . import ptb

        duration = round(audio.duration_s) if audio.duration_s else None
        common = {
            "chat_id": _chat(address),
            "duration": duration,
            "message_thread_id": _thread(address),
            "reply_parameters": ptb.reply_parameters(reply_to),
        }
        with ptb.translated_errors():
            if audio.mime.split(";")[0] in _OGG:
                # Only OGG/Opus shows as a voice note; the file name gives the upload its audio/ogg type.
                message = await self._bot().send_voice(voice=ptb.InputFile(audio.data, filename="voice.ogg"), **common)
            else:
                upload = ptb.InputFile(audio.data, filename="audio" + _extension(audio.mime))
                message = await self._bot().send_audio(audio=upload, **common)
        return str(message.message_id)

    async def send_parts(self, address: Address, parts: list[Part], *, reply_to: str | None = None) -> None:
        from . import ptb

        for part in parts:
            if isinstance(part, AudioPart):
                await self.send_voice(address, part, reply_to=reply_to)
                continue
            common = {
                "chat_id": _chat(address),
                "message_thread_id": _thread(address),
                "reply_parameters": ptb.reply_parameters(reply_to),
            }
            if isinstance(part, ImagePart) and (part.data or part.url):
                with ptb.translated_errors():  # Telegram fetches a URL itself
                    photo = (
                        ptb.InputFile(part.data, filename="image" + _extension(part.mime)) if part.data else part.url
                    )
                    await self._bot().send_photo(photo=photo, **common)
            elif isinstance(part, FilePart):
                data = part.data or (await asyncio.to_thread(Path(part.path).read_bytes) if part.path else b"")
                with ptb.translated_errors():
                    await self._bot().send_document(document=ptb.InputFile(data, filename=part.name), **common)
            elif not hasattr(part, "text"):
                log.warning("telegram cannot send %s parts; dropped", part.type)
