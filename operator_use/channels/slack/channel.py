"""The Slack channel: slack-bolt's AsyncApp over Socket Mode (or HTTP events), translating only.

Events become `IncomingMessage`s (events.py decides which and where; files.py fetches attachments);
`send`/`edit` are chat.postMessage/chat.update, voice replies are files uploaded in Slack's three steps.
Streaming, splitting, retries and auth are the gateway's and the orchestrator's. Slack's `msg_too_long`
becomes `TooLong` (the gateway cuts smaller); errors about this one message (`_REFUSALS`) become `Refused`
(the rest of the reply goes on); errors that would fail every message alike stay permanent errors.

Delivery is at least once: the listener runs before the event is acknowledged (`process_before_response`),
so an event whose handling failed is redelivered, and duplicates are dropped by message (events.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp

from ...messages import Address, AudioPart, Button, FilePart, ImagePart, IncomingMessage, Part, TextPart
from ..base import ButtonPayloads, Capabilities, Channel, ChannelError, Refused, RetryAfter, TooLong
from .config import SlackConfig
from .events import EventRouter
from .files import FileFetcher, withheld_files
from .sections import sections

log = logging.getLogger(__name__)

# Errors that another attempt cannot fix, for any message in that conversation.
_PERMANENT = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "restricted_action",
    "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel",
    "restricted_action_non_threadable_channel",
    "ekm_access_denied",
    "invalid_blocks",
}
# Errors about this one message, with words for the user. A text refused is skipped and the user told; an
# edit refused leaves the message as it is and the rest of the reply goes on in a new one.
_REFUSALS = {
    "no_text": "Slack took it for an empty message",
    "slack_connect_file_link_sharing_blocked": "links to Slack files are blocked in this Slack Connect channel",
    "slack_connect_canvas_sharing_blocked": "links to canvases are blocked in this Slack Connect channel",
    "slack_connect_lists_sharing_blocked": "links to lists are blocked in this Slack Connect channel",
    "edit_window_closed": "the workspace no longer allows editing that message",
    "cant_update_message": "Slack does not allow editing that message",
    "message_not_found": "the message being edited was deleted",
}
# Block Kit limits: a button's value (a longer command goes by a key: ButtonPayloads) and label (a
# section's text: sections.py).
_VALUE_CHARS = 2000
_LABEL_CHARS = 75
_ACTION_ID = "operator-button-{}"
_ACTION_IDS = re.compile(r"^operator-button-\d+$")
_AUDIO_EXT = {
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/webm": "webm",
}


class SlackChannel(Channel):
    name = "slack"
    # Slack's advice for `text` is at most 4,000 characters (it truncates at 40,000, and may break a long
    # message into several, which could then not be edited as one); characters are code points.
    capabilities = Capabilities(
        can_edit=True,
        max_length=4000,
        length_unit="chars",
        edit_interval=1.0,
        voice=True,
        threads=True,
        formatting="slack_mrkdwn",
        buttons=True,
    )

    def __init__(
        self, config: SlackConfig | None = None, *, workspace: Path | None = None, name: str | None = None
    ) -> None:
        super().__init__(config or SlackConfig(), name=name)
        self.config: SlackConfig
        if workspace is None:
            from ...config import data_home

            workspace = data_home() / "workspace"  # the registry passes the configured one
        self.workspace = workspace
        self.router = EventRouter(max_threads=self.config.max_tracked_threads)
        self.client: Any = None  # slack_sdk AsyncWebClient once connected
        self.reconnects = 0  # `disconnect` envelopes and dropped sockets survived
        self.http_port: int | None = None  # HTTP mode: the port actually bound
        self._session: aiohttp.ClientSession | None = None
        self._files: FileFetcher | None = None
        self._socket: Any = None  # AsyncSocketModeHandler
        self._http: Any = None  # HTTP mode: aiohttp AppRunner
        self._state = "down"
        self._connections = 0
        self._closing = False
        self._button_payloads = ButtonPayloads(lambda command: len(command) <= _VALUE_CHARS)

    # --- lifecycle ---

    async def connect(self) -> None:
        from slack_bolt.async_app import AsyncApp
        from slack_sdk.http_retry.builtin_async_handlers import (
            AsyncConnectionErrorRetryHandler,
            AsyncRateLimitErrorRetryHandler,
        )
        from slack_sdk.web.async_client import AsyncWebClient

        cfg = self.config
        if cfg.bot_token is None:
            raise ChannelError("channels.slack.bot_token is not set", permanent=True)
        token = cfg.bot_token.get_secret_value()
        self._closing = False
        self._session = aiohttp.ClientSession()
        retries: list[Any] = [AsyncConnectionErrorRetryHandler()]
        if cfg.rate_limit_retries:
            retries.append(AsyncRateLimitErrorRetryHandler(max_retry_count=cfg.rate_limit_retries))
        try:
            self.client = AsyncWebClient(
                token=token, base_url=cfg.api_base_url, session=self._session, retry_handlers=retries
            )
            auth = await self.client.auth_test()  # a wrong token fails the start here, clearly
            self.router.bot_user_id, self.router.bot_id = auth.get("user_id"), auth.get("bot_id")
            self._files = FileFetcher(
                self._session,
                token=token,
                api_base_url=cfg.api_base_url,
                workspace=self.workspace,
                inbox_dir=cfg.inbox_dir,
                max_bytes=cfg.max_file_bytes,
            )
            app = AsyncApp(
                client=self.client,
                name="operator-use",
                process_before_response=True,
                signing_secret=cfg.signing_secret.get_secret_value() if cfg.signing_secret else "",
                request_verification_enabled=cfg.mode == "http",
            )
            app.event("message")(self._on_message)
            app.event("app_mention")(self._on_mention)
            app.action({"type": "block_actions", "action_id": _ACTION_IDS})(self._on_press)
            if cfg.mode == "socket":
                await self._connect_socket(app)
            else:
                from .http import serve_events

                self._http, self.http_port = await serve_events(app, cfg.http_host, cfg.http_port, cfg.http_path)
        except BaseException:
            await self.disconnect()
            raise
        self._state = "up"
        log.info("slack connected as %s (%s mode, API %s)", self.router.bot_user_id, cfg.mode, cfg.api_base_url)

    async def _connect_socket(self, app: Any) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        assert self.config.app_token is not None
        handler = AsyncSocketModeHandler(
            app,
            self.config.app_token.get_secret_value(),
            web_client=self.client,
            ping_interval=self.config.ping_interval,
        )
        self._socket = handler
        handler.client.on_message_listeners.append(self._on_frame)
        handler.client.on_close_listeners.append(self._on_socket_closed)
        # Fetch the socket URL ourselves: a wrong app token fails here, where the SDK would retry forever.
        handler.client.wss_uri = await handler.client.issue_new_wss_url()
        await handler.connect_async()

    async def disconnect(self) -> None:
        self._closing = True
        if self._socket is not None:
            client, self._socket = self._socket.client, None
            await client.close()
            # close() cancels the SDK's receive, monitor and processing tasks without waiting for them.
            tasks = [
                t for t in (client.message_processor, client.current_session_monitor, client.message_receiver) if t
            ]
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            runner, self._http = self._http, None
            await runner.cleanup()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        self._state = "down"

    def status(self) -> str:
        if self._state == "up" and self._socket is not None:
            session = self._socket.client.current_session
            if session is None or session.closed:  # dropped; the SDK's monitor is reconnecting
                return "reconnecting"
        return self._state

    async def _on_frame(self, frame: aiohttp.WSMessage) -> None:
        try:
            data = json.loads(frame.data)
            kind = data.get("type")
        except (TypeError, ValueError, AttributeError):
            return
        if kind == "hello":
            self._connections += 1
            if self._connections > 1:
                self.reconnects += 1
                log.info("slack socket reconnected (connection %d)", self._connections)
            self._state = "up"
        elif kind == "disconnect":
            self._state = "reconnecting"
            log.warning("slack asked to reconnect (%s); reconnecting", data.get("reason"))

    async def _on_socket_closed(self, frame: aiohttp.WSMessage) -> None:
        # Only logged: status() reads the live socket, and a late close of the old socket must not
        # overwrite the state of the new one.
        if not self._closing:
            log.warning("slack socket closed by the server; reconnecting")

    # --- incoming ---

    async def _on_message(self, event: dict[str, Any]) -> None:
        await self._handle(event, mention=False)

    async def _on_mention(self, event: dict[str, Any]) -> None:
        await self._handle(event, mention=True)

    async def _handle(self, event: dict[str, Any], *, mention: bool) -> None:
        route = self.router.route(event, mention_event=mention)
        if route is None:
            return
        if not self.router.claim(event):
            # Expected for every mention (message + app_mention) and after reconnects: debug, not info.
            log.debug(
                "slack: message %s in %s already handled; acknowledged again", event.get("ts"), event.get("channel")
            )
            return
        try:
            parts: list[Part] = [TextPart(text=route.text)] if route.text else []
            files = list(event.get("files") or ())
            if files and self._files is not None:
                # Listeners run before the ack: an unknown sender's downloads would hold up the events behind.
                known = await self.may_fetch(str(event["user"]))
                parts += await self._files.parts(files) if known else withheld_files(files)
            await self.emit(
                IncomingMessage(
                    channel=self.name,
                    chat_id=route.chat_id,
                    thread_id=route.thread_id,
                    user_id=str(event["user"]),
                    parts=parts,
                    message_id=str(event["ts"]),
                    is_direct=route.is_direct,
                    mentioned=route.mentioned,
                )
            )
        except BaseException:
            self.router.release(event)  # not acknowledged: Slack's redelivery gets another chance
            raise

    async def _on_press(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A button pressed (a block_actions payload): acknowledged, whoever pressed it, and emitted as the
        presser's own message, so the orchestrator authorizes it as if they had typed the command. Bolt sends
        the ack when this returns (listeners run first, as for events)."""
        await ack()
        value = str(action.get("value") or "")
        command = self._button_payloads.command(value)
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        user = (body.get("user") or {}).get("id")
        message = body.get("message") or {}
        if not command or not channel or not user:
            log.info("slack: a button press without a command, channel or user; ignored")
            return
        await self.emit(
            IncomingMessage(
                channel=self.name,
                chat_id=str(channel),
                thread_id=message.get("thread_ts") or container.get("thread_ts"),
                user_id=str(user),
                parts=[TextPart(text=command)],
                message_id=message.get("ts") or container.get("message_ts"),
                is_direct=str(channel).startswith("D"),
                mentioned=True,  # pressing the bot's own button addresses the bot
            )
        )

    # --- outgoing ---

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        response = await self._call(
            self._client().chat_postMessage,
            channel=address.chat_id,
            text=text,
            thread_ts=address.thread_id,
            mrkdwn=not plain,
        )
        if address.thread_id:
            self.router.joined(address.chat_id, address.thread_id)
        return str(response["ts"])

    async def send_buttons(
        self, address: Address, text: str, buttons: list[Button], *, reply_to: str | None = None
    ) -> str:
        elements = []
        for i, b in enumerate(buttons):
            element: dict[str, Any] = {
                "type": "button",
                "text": {"type": "plain_text", "text": b.label[:_LABEL_CHARS]},
                "action_id": _ACTION_ID.format(i),
                "value": self._button_payloads.payload(b.command),
            }
            if b.style in ("primary", "danger"):
                element["style"] = b.style
            elements.append(element)
        response = await self._call(
            self._client().chat_postMessage,
            channel=address.chat_id,
            text=text,  # notifications and clients without blocks
            blocks=[*_section_blocks(text), {"type": "actions", "elements": elements}],
            thread_ts=address.thread_id,
        )
        if address.thread_id:
            self.router.joined(address.chat_id, address.thread_id)
        return str(response["ts"])

    async def close_buttons(self, address: Address, message_id: str, text: str) -> None:
        # chat.update keeps a message's blocks unless given new ones: the sections alone, without the actions.
        blocks = _section_blocks(text)
        await self._call(self._client().chat_update, channel=address.chat_id, ts=message_id, text=text, blocks=blocks)

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        await self._call(self._client().chat_update, channel=address.chat_id, ts=message_id, text=text)

    async def send_voice(self, address: Address, audio: AudioPart, *, reply_to: str | None = None) -> str:
        ext = _AUDIO_EXT.get(audio.mime.split(";")[0].strip(), "ogg")
        return await self._upload(address, audio.data, f"voice-reply.{ext}", "Voice reply")

    async def send_parts(self, address: Address, parts: list[Part], *, reply_to: str | None = None) -> None:
        for part in parts:
            if isinstance(part, AudioPart):
                await self.send_voice(address, part)
            elif isinstance(part, ImagePart) and part.data:
                await self._upload(address, part.data, "image." + part.mime.split("/")[-1], "Image")
            elif isinstance(part, FilePart) and part.data:
                await self._upload(address, part.data, part.name, part.name)
            elif not isinstance(part, TextPart):
                log.warning("slack: %s part without data not sent", part.type)

    async def _upload(self, address: Address, data: bytes, filename: str, title: str) -> str:
        # files_upload_v2 is Slack's three steps: files.getUploadURLExternal, POST to it, completeUploadExternal.
        response = await self._call(
            self._client().files_upload_v2,
            channel=address.chat_id,
            thread_ts=address.thread_id,
            content=data,
            filename=filename,
            title=title,
        )
        return str((response.get("file") or {}).get("id", ""))

    def _client(self) -> Any:
        if self.client is None or self._session is None:
            raise ChannelError("slack is not connected")
        return self.client

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        from slack_sdk.errors import SlackApiError

        try:
            return await method(**kwargs)
        except SlackApiError as exc:
            raise _channel_error(exc) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ChannelError(f"slack request failed: {exc!r}") from exc


def _section_blocks(text: str) -> list[dict[str, Any]]:
    """Section blocks for `text`, each valid mrkdwn on its own (Slack parses every section separately)."""
    return [{"type": "section", "text": {"type": "mrkdwn", "text": part}} for part in sections(text)]


def _channel_error(exc: Any) -> ChannelError:
    response = exc.response
    error = response.get("error") if response is not None else None
    if response is not None and (response.status_code == 429 or error == "ratelimited"):
        # The SDK's own retries are used up: the gateway waits and tries again with the latest text.
        headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
        value = headers.get("retry-after", "1")
        value = value[0] if isinstance(value, list) else value
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = 1.0
        return RetryAfter(seconds, f"slack rate limited; retry after {seconds}s")
    if error == "msg_too_long":
        return TooLong("slack: msg_too_long")
    if error in _REFUSALS:
        return Refused(_REFUSALS[error])
    return ChannelError(
        f"slack API error: {error or getattr(response, 'status_code', '?')}", permanent=error in _PERMANENT
    )
