"""The Discord channel, on discord.py 2.x (gateway websocket in, REST out).

discord.py keeps the gateway alive itself: heartbeats, RECONNECT/RESUME and backoff; we only follow its
connect/disconnect/resumed events for `status()` and the log. It also waits out short 429s itself;
longer ones (over `max_ratelimit_wait`), repeated ones and 429s it refuses to retry become `RetryAfter`,
so the gateway's stream editor keeps buffering the reply and loses nothing. Content over the length limit
becomes `TooLong` (cut smaller), a message AutoMod blocks `Refused` (skipped, the user told): errors.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ...messages import Address, AudioPart, Button, FilePart, ImagePart, Part
from ..base import ButtonPayloads, Capabilities, Channel, ChannelError, RetryAfter
from .config import DiscordConfig
from .endpoints import discover_gateway, rebase_api, rebase_gateway, rebase_webhooks
from .errors import platform_errors as _errors
from .inbound import press_to_incoming, should_answer, to_incoming

log = logging.getLogger(__name__)

# A send without reply_to this soon after a reply part was finalized continues that reply.
_CONTINUATION_WINDOW = 5.0
_REMEMBERED = 500
# A button's custom_id holds up to 100 characters; a longer command goes by a key (ButtonPayloads).
_CUSTOM_ID_CHARS = 100
_AUDIO_EXT = {
    "audio/ogg": ".ogg",
    "audio/opus": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
}


class DiscordChannel(Channel):
    name = "discord"
    # Discord allows about 5 edits per 5 s per channel. It counts content in code points, as Python does
    # (discord/discord-api-docs#1315: its API is Python 3); an over-long message is answered 50035 (errors.py).
    capabilities = Capabilities(
        can_edit=True,
        max_length=2000,
        length_unit="chars",
        edit_interval=1.0,
        voice=True,
        threads=True,
        formatting="discord",
        buttons=True,
    )

    def __init__(self, config: DiscordConfig | None = None, *, workspace: Path | None = None) -> None:
        self.discord_config = config or DiscordConfig(enabled=True)
        super().__init__(self.discord_config)
        if workspace is None:
            from ...config import data_home

            workspace = data_home() / "workspace"
        self.inbox = workspace / "inbox"
        self._client: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._state = "down"
        self._closing = False
        self._inbound: dict[str, tuple[asyncio.Lock, int]] = {}
        # Long replies continued in a thread: the channel (or thread) each message we sent lives in, the
        # text of reply parts (a thread's title), and per chat the reply part finalized last.
        self._where: OrderedDict[str, int] = OrderedDict()
        self._reply_parts: OrderedDict[str, str] = OrderedDict()  # message id -> its text (reply parts)
        self._finished: dict[str, tuple[str, float]] = {}  # address key -> (last reply part id, when)
        self._button_payloads = ButtonPayloads(lambda command: len(command) <= _CUSTOM_ID_CHARS, keep=_REMEMBERED)

    # --- lifecycle ---

    async def connect(self) -> None:
        import discord

        token = self.discord_config.token
        if token is None or not token.get_secret_value():
            raise ChannelError("channels.discord.token is not set", permanent=True)
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it for the bot in the developer portal
        client = discord.Client(
            intents=intents,
            max_ratelimit_timeout=self.discord_config.max_ratelimit_wait,
            # The model's text must never ping @everyone, roles or people.
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=False, replied_user=True),
        )
        events = {
            "on_connect": self._on_connect,
            "on_resumed": self._on_resumed,
            "on_disconnect": self._on_disconnect,
            "on_message": self._on_message,
            "on_interaction": self._on_interaction,
        }
        for name, handler in events.items():  # discord.py dispatches to attributes named after the event
            setattr(client, name, handler)
        cfg = self.discord_config
        if cfg.api_base_url:
            rebase_api(client.http, cfg.api_base_url)
        self._closing, self._state = False, "starting"
        self._connected.clear()
        try:
            await client.login(token.get_secret_value())
            gateway = cfg.gateway_url
            if gateway is None and cfg.api_base_url:
                gateway = await discover_gateway(client.http)
            if gateway:
                rebase_gateway(client.http, gateway)
        except BaseException as exc:
            self._state = "down"
            await client.close()
            if isinstance(exc, discord.LoginFailure):
                raise ChannelError("Discord refused the bot token (channels.discord.token)", permanent=True) from None
            if isinstance(exc, discord.GatewayNotFound):
                raise ChannelError(
                    f"{cfg.api_base_url}/gateway/bot did not give a gateway URL; set channels.discord.gateway_url"
                ) from None
            raise
        self._client = client
        self._runner = asyncio.create_task(self._run(client), name="discord-gateway")
        ready = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({ready, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._connected.is_set():
            await self.disconnect()
            raise ChannelError("Discord gateway closed before READY (see the log)")

    async def _run(self, client: Any) -> None:
        import discord

        if self.discord_config.api_base_url:
            rebase_webhooks(self.discord_config.api_base_url)  # this task's context: its event handlers only
        try:
            await client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            log.error(
                "Discord refused the message content intent: enable it for the bot in the developer portal "
                "(Bot → Privileged Gateway Intents → Message Content Intent)"
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Discord gateway connection ended")
        finally:
            self._state = "down"

    async def disconnect(self) -> None:
        self._closing = True
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        self._client = self._runner = None
        self._state = "down"

    def status(self) -> str:
        return self._state

    async def _on_connect(self) -> None:
        if self._connected.is_set():
            log.warning("Discord gateway reconnected with a new session (events while away may be lost)")
        else:
            log.info("Discord connected as %s (%s)", self._client.user, self._client.user.id)
        self._state = "up"
        self._connected.set()

    async def _on_resumed(self) -> None:
        log.info("Discord gateway resumed its session")
        self._state = "up"

    async def _on_disconnect(self) -> None:
        if not self._closing:
            log.warning("Discord gateway disconnected; reconnecting")
            self._state = "reconnecting"

    # --- inbound ---

    async def _on_message(self, message: Any) -> None:
        import discord

        me = self._client.user if self._client is not None else None
        if me is None or message.author.id == me.id or message.author.bot:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return  # pins, thread-created notices, joins...
        if not should_answer(self.discord_config, message, me.id):
            return
        key = str(message.channel.id)
        # discord.py runs each event as its own task: this lock, taken before any await, keeps a chat's
        # messages in arrival order while one of them downloads attachments.
        lock, users = self._inbound.get(key) or (asyncio.Lock(), 0)
        self._inbound[key] = (lock, users + 1)
        try:
            async with lock:
                incoming = await to_incoming(
                    message,
                    channel_name=self.name,
                    config=self.discord_config,
                    bot_id=me.id,
                    inbox=self.inbox,
                    may_fetch=self.may_fetch,
                )
                if incoming.parts:
                    await self.emit(incoming)
        except Exception:
            log.exception("could not take Discord message %s", message.id)
        finally:
            lock, users = self._inbound[key]
            if users == 1:
                del self._inbound[key]
            else:
                self._inbound[key] = (lock, users - 1)

    async def _on_interaction(self, interaction: Any) -> None:
        """A button pressed: acknowledged at once (Discord wants an answer within 3 s, or the presser sees
        "This interaction failed"), whoever pressed it, then emitted as the presser's own message, so the
        orchestrator authorizes it as if they had typed the command."""
        import discord

        if interaction.type is not discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id") or "")
        command = self._button_payloads.command(custom_id)
        try:
            if command:
                await interaction.response.defer()  # a deferred update: the message stays as it is
            else:  # a key from before a restart
                await interaction.response.send_message(
                    "This button has expired; type the command instead.", ephemeral=True
                )
        except discord.HTTPException as exc:
            log.warning("could not acknowledge a Discord button press: %s", exc)
        if command:
            try:
                await self.emit(press_to_incoming(interaction, command, channel_name=self.name))
            except Exception:
                log.exception("could not take Discord button press %s", interaction.id)

    # --- outbound ---

    def _messageable(self, channel_id: int) -> Any:
        if self._client is None:
            raise ChannelError("Discord is not connected")
        return self._client.get_partial_messageable(channel_id)

    @staticmethod
    def _target(address: Address) -> int:
        return int(address.thread_id or address.chat_id)

    def _reference(self, channel_id: int, reply_to: str | None) -> Any:
        import discord

        if reply_to is None:
            return None
        return discord.MessageReference(message_id=int(reply_to), channel_id=channel_id, fail_if_not_exists=False)

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        channel_id = self._target(address)
        if reply_to is None:
            channel_id = await self._continuation_target(address, channel_id, text)
        with _errors("send"):
            message = await self._messageable(channel_id).send(
                content=text, reference=self._reference(channel_id, reply_to)
            )
        mid = str(message.id)
        self._remember(self._where, mid, channel_id)
        if self.discord_config.thread_long_replies and (reply_to is not None or channel_id != self._target(address)):
            self._remember(self._reply_parts, mid, text)
        return mid

    async def send_buttons(
        self, address: Address, text: str, buttons: list[Button], *, reply_to: str | None = None
    ) -> str:
        import discord

        styles = {"primary": discord.ButtonStyle.primary, "danger": discord.ButtonStyle.danger}
        view = discord.ui.View(timeout=None)
        for b in buttons:
            view.add_item(
                discord.ui.Button(
                    label=b.label[:80],
                    custom_id=self._button_payloads.payload(b.command),
                    style=styles.get(b.style, discord.ButtonStyle.secondary),
                )
            )
        # Stopped: discord.py would otherwise keep the view to dispatch presses to it; _on_interaction takes them.
        view.stop()
        channel_id = self._target(address)
        with _errors("send"):
            message = await self._messageable(channel_id).send(
                content=text, view=view, reference=self._reference(channel_id, reply_to)
            )
        mid = str(message.id)
        self._remember(self._where, mid, channel_id)
        return mid

    async def close_buttons(self, address: Address, message_id: str, text: str) -> None:
        channel_id = self._where.get(message_id, self._target(address))
        with _errors("edit"):
            # view=None: the components go (an empty list), the text is replaced.
            await self._messageable(channel_id).get_partial_message(int(message_id)).edit(content=text, view=None)

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        channel_id = self._where.get(message_id, self._target(address))
        with _errors("edit"):
            await self._messageable(channel_id).get_partial_message(int(message_id)).edit(content=text)
        if message_id in self._reply_parts:
            self._reply_parts[message_id] = text

    async def finalize(self, address: Address, message_id: str) -> None:
        if message_id in self._reply_parts:
            self._finished[address.key] = (message_id, time.monotonic())

    async def typing(self, address: Address) -> None:
        with _errors("typing"):
            await self._messageable(self._target(address)).typing()

    async def send_voice(self, address: Address, audio: AudioPart, *, reply_to: str | None = None) -> str:
        ext = _AUDIO_EXT.get(audio.mime) or mimetypes.guess_extension(audio.mime) or ".ogg"
        return await self._send_files(address, [(f"voice{ext}", audio.data)], reply_to)

    async def send_parts(self, address: Address, parts: list[Part], *, reply_to: str | None = None) -> None:
        files: list[tuple[str, bytes]] = []
        for part in parts:
            if isinstance(part, AudioPart):
                await self.send_voice(address, part, reply_to=reply_to)
            elif isinstance(part, ImagePart) and part.data:
                files.append((f"image{mimetypes.guess_extension(part.mime) or '.png'}", part.data))
            elif isinstance(part, FilePart):
                data = part.data or (await asyncio.to_thread(Path(part.path).read_bytes) if part.path else b"")
                files.append((part.name, data))
        if files:
            await self._send_files(address, files, reply_to)

    async def _send_files(self, address: Address, files: list[tuple[str, bytes]], reply_to: str | None) -> str:
        import discord

        channel_id = self._target(address)
        with _errors("upload"):
            message = await self._messageable(channel_id).send(
                files=[discord.File(io.BytesIO(data), filename=name) for name, data in files],
                reference=self._reference(channel_id, reply_to),
            )
        return str(message.id)

    # --- long replies in a thread ---

    async def _continuation_target(self, address: Address, channel_id: int, text: str) -> int:
        """Where a message without reply_to goes: into a thread on the reply it continues, when configured."""
        finished = self._finished.get(address.key)
        if (
            not self.discord_config.thread_long_replies
            or address.thread_id is not None
            or finished is None
            or time.monotonic() - finished[1] > _CONTINUATION_WINDOW
        ):
            return channel_id
        first_id = finished[0]
        where = self._where.get(first_id, channel_id)
        if where != channel_id:
            return where  # the part before is already in the thread
        parent = self._client.get_channel(channel_id) if self._client is not None else None
        if parent is None or not hasattr(parent, "create_thread"):
            return channel_id  # not a guild text channel we know
        title = (self._reply_parts.get(first_id) or text).strip().splitlines()[0][:90] or "Reply"
        try:
            with _errors("start thread"):
                thread = await parent.get_partial_message(int(first_id)).create_thread(name=title)
        except RetryAfter:
            raise  # the gateway waits and sends again: we try again then
        except ChannelError as exc:
            log.warning("could not start a thread for a long reply (%s); continuing in the channel", exc)
            self._finished.pop(address.key, None)
            return channel_id
        log.info("Discord reply %s continues in thread %s", first_id, thread.id)
        return int(thread.id)

    @staticmethod
    def _remember(store: OrderedDict[str, Any], key: str, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > _REMEMBERED:
            store.popitem(last=False)
