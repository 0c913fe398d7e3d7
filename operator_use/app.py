"""The whole agent as one object, for the CLI and for embedding in another Python program.

    from operator_use import App

    async with App.from_config(channels=[my_channel], llm=my_llm) as app:
        await app.wait_closed()

`App` wires the bus, the channels and their gateway, the orchestrator and the agent. Everything not
given is built from the configuration (`config.yaml` + `OPERATOR_*` variables).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .agent.context import ContextBuilder
from .agent.hooks import Hooks
from .agent.loop import Agent
from .agent.tools import Tool, ToolRegistry
from .bus.base import Bus
from .bus.memory import MemoryBus
from .channels.base import Channel
from .config import Config, load_config
from .gateway.gateway import Gateway
from .homelock import HomeLock
from .orchestrator.orchestrator import Orchestrator
from .providers.llm.base import LLM
from .session.store import SessionStore
from .workspace import ensure_workspace

log = logging.getLogger(__name__)


class NoLLMConfigured(Exception):
    """No model is configured and none was found; the message says what to set."""


class App:
    def __init__(
        self,
        config: Config | None = None,
        *,
        channels: Sequence[Channel] | None = None,
        llm: LLM | None = None,
        tools: Iterable[Tool] | None = None,
        bus: Bus | None = None,
        hooks: Hooks | None = None,
        gateway_options: dict[str, Any] | None = None,
        home_lock: HomeLock | None = None,
    ) -> None:
        self.config = config or load_config()
        self.bus: Bus = bus or MemoryBus()
        self.llm = llm
        self.llm_reason: str | None = "given by the embedding program" if llm else None
        self.hooks = hooks or Hooks()
        self._given_channels = list(channels) if channels is not None else None
        self._given_tools = list(tools) if tools is not None else None
        self._gateway_options = gateway_options or {}
        self.channels: list[Channel] = []
        self.gateway: Gateway | None = None
        self.orchestrator: Orchestrator | None = None
        self.agent: Agent | None = None
        # Approvals, pairing/users, redaction and the session-bound tools' runtime (security/wiring.py).
        self.protection: Any = None
        # voice/service.py VoiceService: speech-to-text and spoken replies, built in start().
        self.voice: Any = None
        self.sessions = SessionStore(self.config.home)
        # One agent per data home (homelock.py): taken by prepare(), released by stop(). A lock given already
        # held (`operator-use run` takes it before anything else) is found held by prepare().
        self.home_lock = home_lock if home_lock is not None else HomeLock(self.config.home)
        self.restart_requested = False
        # control/server.py: answers `operator-use status` on <home>/control.sock while running.
        self.control: Any = None
        self.started_at: float | None = None
        self._closed = asyncio.Event()
        self._started = False

    @classmethod
    def from_config(cls, config: Config | dict[str, Any] | None = None, **kw: Any) -> App:
        if isinstance(config, dict):
            config = load_config(**config)
        return cls(config, **kw)

    # --- building ---

    async def _build_llm(self) -> LLM:
        from .providers.llm.setup import llm_from_config

        llm, reason = await llm_from_config(self.config.llm, config_file=self.config.config_path)
        if llm is None:
            raise NoLLMConfigured(reason)
        self.llm_reason = reason
        return llm

    def _build_channels(self) -> list[Channel]:
        from .channels.registry import build_channels

        return build_channels(self.config, on_eof=self.request_stop)

    def _build_tools(self) -> list[Tool]:
        from .tools import builtin_tools

        return builtin_tools(
            sandbox=self.config.agent.sandbox,
            shell_timeout=self.config.agent.shell_timeout,
            config=self.config.tools,
            runtime=self.protection.runtime if self.protection is not None else None,
        )

    def _build_voice(self) -> Any:
        from .voice.setup import build_voice

        speaks = {c.name for c in self.channels if c.capabilities.voice}
        return build_voice(self.config.voice, self.config.home, can_speak=speaks.__contains__)

    # --- lifecycle ---

    async def prepare(self) -> LLM:
        """Claim the data home (raises HomeInUse), create the workspace and choose the model (raises
        NoLLMConfigured). `start` calls it too."""
        await asyncio.to_thread(self.home_lock.acquire)
        if self._given_channels is None:
            from .channels.registry import check_extras

            # A channel whose SDK is missing fails now, with the install command, not in the start retry.
            await asyncio.to_thread(check_extras, self.config)
        await asyncio.to_thread(ensure_workspace, self.config.workspace)
        if self.llm is None:
            self.llm = await self._build_llm()
        return self.llm

    async def start(self) -> None:
        if self._started:
            return
        from .security.hardening import make_undumpable

        make_undumpable()  # /proc/<our pid>/environ and mem (API keys) closed to other processes of our user
        workspace = self.config.workspace
        self.llm = await self.prepare()
        self.channels = self._given_channels if self._given_channels is not None else self._build_channels()
        for ch in self.channels:  # channels that show past messages (the web page) read the store
            if hasattr(ch, "use_sessions"):
                ch.use_sessions(self.sessions)
        from .providers.llm.setup import stream_limits
        from .security.wiring import Protection
        from .tools import select_tools

        self.protection = Protection(self.config, self.bus, self.sessions, {c.name: c.config for c in self.channels})
        for ch in self.channels:  # approved pairings and users get their files fetched too (Channel.may_fetch)
            ch.knows = self.protection.access.knows
        tools = ToolRegistry(
            select_tools(
                self._given_tools if self._given_tools is not None else self._build_tools(), self.config.agent.tools
            )
        )
        self.agent = Agent(
            self.llm,
            tools,
            ContextBuilder(workspace),
            hooks=self.hooks,
            max_iterations=self.config.agent.max_iterations,
            context_tokens=self.config.llm.context_window,
            reply_reserve_tokens=self.config.llm.max_tokens,
            limits=stream_limits(self.config.llm),
        )
        self.gateway = Gateway(self.bus, self.channels, **self._gateway_options)
        self.orchestrator = Orchestrator(
            self.bus,
            self.agent,
            self.sessions,
            {c.name: c.config for c in self.channels},
            workspace=workspace,
            max_concurrent_turns=self.config.agent.max_concurrent_turns,
            on_restart=self._restart,
            status=self.gateway.status,
            channels=self.gateway.channels,
        )
        self.protection.attach(self.orchestrator, tools, self.hooks, channels=self.gateway.channels)
        self.voice = self._build_voice()
        self.voice.install(self.orchestrator, self.gateway)
        for ch in self.channels:  # platforms with a "/" menu (Telegram's setMyCommands) list the commands
            if hasattr(ch, "command_menu"):
                ch.command_menu = self.orchestrator.commands.menu
            if hasattr(ch, "use_agent"):  # the web page: its token file, the model shown, mic on or off
                ch.use_agent(home=self.config.home, model=self.llm.label, stt=self.voice.transcriber is not None)
        await self.orchestrator.start()
        await self.gateway.start()
        self._started = True
        self.started_at = time.time()
        if self.config.control.enabled:
            from .control.server import ControlServer

            self.control = ControlServer(self.config.home, self.status)
            try:
                await self.control.start()
            except OSError as exc:  # a read-only home, say: the agent still serves its chats
                log.warning("control socket not started (operator-use status will not see this agent): %s", exc)
                self.control = None
        log.info(
            "operator-use started: model %s; channels %s", self.llm.label, ", ".join(c.name for c in self.channels)
        )

    async def stop(self) -> None:
        if not self._started:
            await asyncio.to_thread(self.home_lock.release)  # prepared, maybe, but never started
            return
        self._started = False
        if self.control is not None:
            await self.control.stop()
            self.control = None
        if self.orchestrator:
            await self.orchestrator.stop()
        if self.protection is not None:
            await self.protection.close()
        if self.voice:
            await self.voice.aclose()
        if self.gateway:
            await self.gateway.stop()
        if self.llm:
            await self.llm.aclose()
        await self.bus.close()
        await asyncio.to_thread(self.home_lock.release)
        self._closed.set()

    def status(self) -> Any:
        """What `operator-use status` shows (control/status.py), from the live parts' own bookkeeping."""
        from .control.status import ConversationLane, OutgoingLane, Status, package_version

        incoming, outgoing = (getattr(self.bus, name, None) for name in ("incoming", "outgoing"))
        lanes = self.orchestrator.lanes if self.orchestrator else None
        return Status(
            version=package_version(),
            pid=os.getpid(),
            home=str(self.config.home),
            started_at=self.started_at or 0.0,
            uptime=time.time() - self.started_at if self.started_at else 0.0,
            model=getattr(self.llm, "label", "?"),
            channels=self.gateway.status() if self.gateway else {},
            turns_running=lanes.running if lanes else 0,
            turns_done=self.orchestrator.turns_done if self.orchestrator else 0,
            conversations=[
                ConversationLane(key=key, running=running, queued=queued)
                for key, running, queued in (lanes.snapshot() if lanes else [])
            ],
            outgoing=[
                OutgoingLane(key=key, queued=n) for key, n in (self.gateway.queued() if self.gateway else {}).items()
            ],
            bus_incoming=incoming.qsize() if isinstance(incoming, asyncio.Queue) else None,
            bus_outgoing=outgoing.qsize() if isinstance(outgoing, asyncio.Queue) else None,
        )

    def request_stop(self) -> None:
        self._closed.set()

    async def _restart(self) -> None:
        self.restart_requested = True
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
