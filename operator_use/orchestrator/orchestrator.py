"""The orchestrator: from an incoming message to a turn of the agent, and its events back to the bus.

It authorizes every message (commands included), handles session commands, queues each conversation's
messages so one turn runs at a time per conversation, and turns the agent's events into stream events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..agent.loop import Agent, AgentEvent, BlockEnd, TextDelta
from ..agent.turn import TurnContext
from ..bus.base import Bus
from ..channels.base import Channel, ChannelConfig, name_key
from ..messages import (
    Address,
    AudioPart,
    CloseButtons,
    HistoryMessage,
    HumanMessage,
    ImagePart,
    IncomingMessage,
    OutgoingMessage,
    StreamBlockEnd,
    StreamDelta,
    StreamDone,
    StreamStart,
    TextPart,
    Typing,
    Usage,
    new_id,
)
from ..providers.llm.base import AuthError, LLMError
from ..providers.stt.base import UNCLEAR, TranscriptionError
from ..security.config import StrangersConfig
from ..security.strangers import Strangers
from ..session.store import SessionStore, SessionWriteError
from .commands import Command, CommandRegistry, parse_command, parse_spoken_command
from .lanes import Lanes

if TYPE_CHECKING:
    from ..security.access import Access

log = logging.getLogger(__name__)

Transcribe = Callable[[AudioPart], Awaitable[str]]
# After a turn: the reply as a voice note, or None when this chat should not hear it.
Speak = Callable[[TurnContext, str], Awaitable[AudioPart | None]]
# Looks at an authorized message before commands and turns; returns True when it consumed it
# (the answer to a question a tool is waiting for, for example).
Interceptor = Callable[[IncomingMessage], Awaitable[bool]]

GENERIC_ERROR = "Sorry, something went wrong while answering. The details are in the agent's log."
LLM_UNAVAILABLE = "The model is unavailable right now ({reason}). Please try again in a moment."
HISTORY_UNREADABLE = (
    "This conversation's history could not be read, so I did not answer. The details are in the agent's log."
)
LLM_AUTH = "The model provider refused the agent's credentials; the owner needs to check the configuration."


class Orchestrator:
    def __init__(
        self,
        bus: Bus,
        agent: Agent,
        sessions: SessionStore,
        channel_configs: Mapping[str, ChannelConfig],
        *,
        workspace: Path,
        max_concurrent_turns: int = 8,
        transcribe: Transcribe | None = None,
        on_restart: Callable[[], Awaitable[None]] | None = None,
        status: Callable[[], Mapping[str, str]] | None = None,
        channels: Mapping[str, Channel] | None = None,
    ) -> None:
        self.bus = bus
        self.agent = agent
        self.sessions = sessions
        self.channel_configs = channel_configs
        self.workspace = workspace
        self.transcribe = transcribe
        self.on_restart = on_restart
        self.channel_status = status
        # The running channels, for what only they know: the bot's own name there (Channel.bot_name).
        self.channels: Mapping[str, Channel] = channels or {}
        self.lanes: Lanes[IncomingMessage] = Lanes(self._turn, max_concurrent_turns)
        self.commands = CommandRegistry()
        self.interceptors: list[Interceptor] = []
        self.speak: Speak | None = None
        # Pairing approvals and registered users (security/access.py), consulted after the channel config.
        self.access: Access | None = None
        # Answers unknown senders off the consumer, rate limited; built once `access` is known.
        self.strangers: Strangers | None = None
        # Called with a conversation key on /stop and /new; each returns how many things it stopped
        # (background processes, ...).
        self.on_session_end: list[Callable[[str], Awaitable[int]]] = []
        self._register_builtin_commands()
        self.usage = Usage()
        self.turns_done = 0
        self._task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---

    async def start(self) -> None:
        self._stranger_desk()
        self._task = asyncio.create_task(self._consume(), name="orchestrator")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.strangers is not None:
            await self.strangers.close()
        await self.lanes.close()
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    async def _consume(self) -> None:
        while True:
            message = await self.bus.next_incoming()
            try:
                await self.handle(message)
            except Exception:
                log.exception("could not handle message %s from %s", message.id, message.key)

    # --- routing ---

    def _config(self, channel: str) -> ChannelConfig | None:
        return self.channel_configs.get(channel)

    def _stranger_desk(self) -> Strangers:
        if self.strangers is None:
            limits = self.access.config.strangers if self.access is not None else StrangersConfig()
            self.strangers = Strangers(limits, self.channel_configs, self.reply, self.access)
        return self.strangers

    def is_allowed(self, message: IncomingMessage) -> bool:
        config = self._config(message.channel)
        if config is not None and config.allows(message.user_id, message.user_name, message.groups):
            return True
        return config is not None and self.access is not None and self.access.allows(message)

    def is_admin(self, message: IncomingMessage) -> bool:
        config = self._config(message.channel)
        if config is not None and config.is_admin(message.user_id, message.user_name):
            return True
        return config is not None and self.access is not None and self.access.is_admin(message)

    async def handle(self, message: IncomingMessage) -> None:
        if self.access is not None:
            await self.access.refresh()
        if not self.is_allowed(message):
            # Commands included: an unknown sender cannot /stop, /new or /restart anything. Their answer
            # (pairing code, rejection) is rate limited and sent by a background worker: never awaited here.
            self._stranger_desk().submit(message)
            return
        for intercept in self.interceptors:
            if await intercept(message):
                return
        command = parse_command(message.text) if message.text else None
        if command is not None and not self._addressed_here(message.channel, command):
            log.info("%s: /%s is addressed to @%s, another bot; ignored", message.channel, command.name, command.target)
            return
        if command is not None:
            await self._command(message, command)
            return
        if not message.parts:
            return
        self.lanes.submit(message.key, message)

    async def reply(self, message: IncomingMessage, text: str) -> None:
        await self.bus.publish_outgoing(OutgoingMessage.of_text(message.address, text, reply_to=message.message_id))

    # --- commands ---

    def _addressed_here(self, channel: str, command: Command) -> bool:
        """False for a /command@name meant for another bot, wherever the channel knows this bot's name: whatever
        a channel let through (a mention stripped first, say), another bot's /new or /approve never runs here."""
        live = self.channels.get(channel) if command.target else None
        own = live.bot_name if live is not None else None
        return own is None or name_key(command.target or "") == name_key(own)

    async def _command(self, message: IncomingMessage, command: Command) -> None:
        spec = self.commands.get(command.name)
        if spec is None:
            await self.reply(message, f"Unknown command /{command.name}. Send /help for the list.")
            return
        if spec.admin and not self.is_admin(message):
            log.warning("non-admin %s:%s tried /%s", message.channel, message.user_id, command.name)
            await self.reply(message, f"/{command.name} is for admins only.")
            return
        answer = await spec.handler(message, command)
        if answer:
            await self.reply(message, answer)

    def _register_builtin_commands(self) -> None:
        register = self.commands.register
        register("start", "say hello", self._cmd_start)
        register("help", "list the commands", self._cmd_help)
        register("status", "show the agent's state", self._cmd_status)
        register("stop", "cancel the running reply (also: !stop)", self._cmd_stop)
        register("new", "archive this conversation and start a fresh one", self._cmd_new)
        register("restart", "restart the agent", self._cmd_restart, admin=True)

    async def _cmd_start(self, message: IncomingMessage, command: Command) -> str:
        return "Hello! Send me a message to get started, or /help for the commands."

    async def _cmd_help(self, message: IncomingMessage, command: Command) -> str:
        return self.commands.help_text(admin=self.is_admin(message))

    async def _cmd_stop(self, message: IncomingMessage, command: Command) -> str:
        cancelled = self.lanes.cancel(message.key)
        ended = await self._end_session_work(message.key)
        return "Stopped." if cancelled or ended else "Nothing to stop."

    async def _end_session_work(self, key: str) -> int:
        ended = 0
        for callback in self.on_session_end:
            try:
                ended += await callback(key)
            except Exception:
                log.exception("session-end callback %r failed for %s", callback, key)
        return ended

    async def _cmd_new(self, message: IncomingMessage, command: Command) -> str:
        self.lanes.cancel(message.key)
        await self._end_session_work(message.key)
        archived = await self.sessions.archive(message.key)
        return "Started a new conversation." + (" The previous one was archived." if archived else "")

    async def _cmd_status(self, message: IncomingMessage, command: Command) -> str:
        return await self._status_text(message)

    async def _cmd_restart(self, message: IncomingMessage, command: Command) -> str:
        if self.on_restart is not None:
            # The reply goes out first; the restart runs once this handler has returned.
            task = asyncio.create_task(self._restart_after_reply(message), name="restart")
            self._side_tasks.add(task)
            task.add_done_callback(self._side_done)
        return "Restarting..."

    async def _restart_after_reply(self, message: IncomingMessage) -> None:
        await asyncio.sleep(0)
        assert self.on_restart is not None
        await self._end_all_work()
        await self.on_restart()

    async def _end_all_work(self, grace: float = 5.0) -> None:
        """Before a restart, every running turn ends as /stop ends it: a pending approval's buttons are closed
        with "Cancelled: ... was not run." instead of vanishing without a word."""
        keys = [key for key, _, _ in self.lanes.snapshot()]
        for key in keys:
            self.lanes.cancel(key)
            await self._end_session_work(key)
        # The cancelled turns send their last words (closing their buttons) as they end: let them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lanes.idle(), grace)

    def _side_done(self, task: asyncio.Task[None]) -> None:
        self._side_tasks.discard(task)
        if not task.cancelled() and task.exception():
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _status_text(self, message: IncomingMessage) -> str:
        session = await self.sessions.load(message.key)
        used = Usage()
        for m in session.messages:
            if m.role == "ai" and m.usage:
                used = used + m.usage
        lines = [
            f"Model: {getattr(self.agent.llm, 'label', '?')}",
            f"Turns running: {self.lanes.running}; this conversation: "
            f"{'busy' if self.lanes.busy(message.key) else 'idle'}, {self.lanes.queued(message.key)} queued",
            f"This conversation: {len(session.messages)} messages, "
            f"{used.input_tokens} tokens in / {used.output_tokens} out",
        ]
        if self.channel_status is not None:
            lines.append("Channels: " + ", ".join(f"{k} {v}" for k, v in self.channel_status().items()))
        return "\n".join(lines)

    # --- one turn ---

    async def _human_message(self, message: IncomingMessage) -> HumanMessage | None:
        texts: list[str] = []
        images: list[ImagePart] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ImagePart):
                images.append(part)
            elif isinstance(part, AudioPart):
                if self.transcribe is None:
                    await self.reply(
                        message,
                        "I can't listen to voice notes: speech-to-text is not set up (install operator-use[voice]).",
                    )
                    return None
                heard = await self._transcribe(message, part)
                if heard is None:
                    return None
                texts.append(heard)
            elif part.type == "file":
                texts.append(f"[file {part.name} ({part.mime})" + (f" saved at {part.path}]" if part.path else "]"))
        text = "\n".join(t for t in texts if t)
        if not text and not images:
            return None
        return HumanMessage(content=text, images=images, user_id=message.user_id)

    async def _transcribe(self, message: IncomingMessage, part: AudioPart) -> str | None:
        """The words of a voice note, or None once the user has been told why there are none."""
        assert self.transcribe is not None
        await self.bus.publish_outgoing(Typing(address=message.address))
        try:
            heard = (await self.transcribe(part)).strip()
        except TranscriptionError as exc:
            heard, problem = "", str(exc) or UNCLEAR
        except Exception:
            log.exception("transcription failed in %s", message.key)
            heard, problem = "", UNCLEAR
        else:
            problem = UNCLEAR
        finally:
            await self.bus.publish_outgoing(Typing(address=message.address, active=False))
        if not heard:
            await self.reply(message, problem)
            return None
        return heard

    async def _speak(self, ctx: TurnContext, message: IncomingMessage, text: str) -> None:
        assert self.speak is not None
        try:
            audio = await self.speak(ctx, text)
        except Exception:
            # The text reply is already out: a voice failure costs only the voice note.
            log.exception("could not speak the reply in %s", message.key)
            return
        if audio is not None:
            await self.bus.publish_outgoing(
                OutgoingMessage(address=ctx.address, parts=[audio], reply_to=message.message_id)
            )

    async def _turn(self, message: IncomingMessage) -> None:
        address = message.address
        human = await self._human_message(message)
        if human is None:
            return
        spoken = any(isinstance(p, AudioPart) for p in message.parts)
        if spoken and (command := parse_spoken_command(human.content, self.commands.names())) is not None:
            await self._command(message, command)
            return
        stream_id = new_id()
        started = False

        async def emit(event: AgentEvent) -> None:
            nonlocal started
            if isinstance(event, TextDelta):
                if not started:
                    started = True
                    await self.bus.publish_outgoing(
                        StreamStart(address=address, stream_id=stream_id, reply_to=message.message_id)
                    )
                await self.bus.publish_outgoing(StreamDelta(address=address, stream_id=stream_id, delta=event.text))
            elif isinstance(event, BlockEnd) and started:
                await self.bus.publish_outgoing(StreamBlockEnd(address=address, stream_id=stream_id))

        async def send_text(text: str) -> None:
            await self.bus.publish_outgoing(OutgoingMessage.of_text(address, text))

        async def send_message(outgoing: OutgoingMessage | CloseButtons) -> None:
            await self.bus.publish_outgoing(outgoing)

        ctx = TurnContext(
            address=address,
            user_id=message.user_id,
            user_name=message.user_name,
            session_key=message.key,
            workspace=self.workspace,
            is_admin=self.is_admin(message),
            turn_id=stream_id,
            send_text=send_text,
            send_message=send_message,
            spoken=spoken,
        )
        try:
            session = await self.sessions.load(message.key)
        except Exception:
            # Without its history the turn would answer out of context: say so instead of going silent.
            log.exception("history of %s could not be loaded", message.key)
            await send_text(HISTORY_UNREADABLE)
            return
        history = list(session.messages)

        async def persist(batch: list[HistoryMessage]) -> None:
            # Bound to this session: if /new archived it meanwhile, the tail stays out of the new one.
            await self.sessions.append(message.key, batch, session=session)

        await self.bus.publish_outgoing(Typing(address=address))
        error: str | None = None
        interrupted = False
        try:
            result = await self.agent.run(ctx, history, human, emit=emit, persist=persist)
            self.usage = self.usage + result.usage
            self.turns_done += 1
        except asyncio.CancelledError:
            interrupted = True
            raise
        except AuthError:
            log.exception("LLM authentication failed in %s", message.key)
            error = LLM_AUTH
        except LLMError as exc:
            log.warning("LLM failed in %s: %s", message.key, exc)
            error = LLM_UNAVAILABLE.format(
                reason=type(exc).__name__.replace("Error", "").rstrip("_").lower() or "error"
            )
        except SessionWriteError as exc:
            log.error("history of %s not saved: %s", message.key, exc.__cause__ or exc)
            error = str(exc)
        except Exception:
            log.exception("turn failed in %s", message.key)
            error = GENERIC_ERROR
        finally:
            # Shielded: a cancelled turn must still close its stream and stop the typing indicator.
            await asyncio.shield(self._close_turn(address, stream_id, started, interrupted or error is not None))
        if error:
            await self.bus.publish_outgoing(OutgoingMessage.of_text(address, error, reply_to=message.message_id))
        elif self.speak is not None and result.text.strip():
            await self._speak(ctx, message, result.text)

    async def _close_turn(self, address: Address, stream_id: str, started: bool, interrupted: bool) -> None:
        if started:
            await self.bus.publish_outgoing(StreamDone(address=address, stream_id=stream_id, interrupted=interrupted))
        await self.bus.publish_outgoing(Typing(address=address, active=False))
