"""Helpers to run the real pipeline (App) against a fake LLM server and a test channel."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from operator_use.agent.tools import Tool
from operator_use.agent.turn import TurnContext, current_turn
from operator_use.app import App
from operator_use.bus.memory import MemoryBus
from operator_use.config import load_config
from operator_use.messages import StreamDelta

from ..fakes.llm_server import FakeRequest, Reply
from .chat import ChatChannel


class TappedBus(MemoryBus):
    """The real in-memory bus, also keeping a copy of everything published outward."""

    def __init__(self) -> None:
        super().__init__()
        self.outgoing_log: list[Any] = []

    async def publish_outgoing(self, item: Any) -> None:
        self.outgoing_log.append(item)
        await super().publish_outgoing(item)

    def deltas(self, chat: str = "c1") -> list[str]:
        return [i.delta for i in self.outgoing_log if isinstance(i, StreamDelta) and i.address.chat_id == chat]


class GateParams(BaseModel):
    name: str


class Gates:
    """A tool that blocks until the test releases it, recording the context it ran in."""

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.entered: list[str] = []
        self.cancelled: list[str] = []
        # name -> (ctx.chat_id, contextvar chat_id) at entry and after waiting
        self.seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._changed = asyncio.Condition()

    async def _gate(self, ctx: TurnContext, params: GateParams) -> str:
        turn = current_turn.get()
        self.seen[params.name].append((ctx.chat_id, turn.chat_id if turn else "?"))
        async with self._changed:
            self.entered.append(params.name)
            self._changed.notify_all()
        try:
            await self.release[params.name].wait()
        except asyncio.CancelledError:
            self.cancelled.append(params.name)
            raise
        turn = current_turn.get()
        self.seen[params.name].append((ctx.chat_id, turn.chat_id if turn else "?"))
        return f"gate {params.name} opened in chat {ctx.chat_id}"

    async def wait_entered(self, *names: str) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: all(n in self.entered for n in names))

    def tool(self) -> Tool:
        return Tool("gate", "Wait until the gate opens.", GateParams, self._gate)


def scripted_responder(request: FakeRequest) -> Reply:
    """ "block X" -> call the gate tool X; a tool result -> "done: <result>"; anything else is echoed."""
    result = request.last_tool_result()
    if result is not None:
        return Reply(text=f"done: {result}", chunk_size=5)
    text = request.last_user_text()
    if text.startswith("block "):
        return Reply(tool_calls=[{"name": "gate", "arguments": {"name": text.split()[1]}}])
    return Reply(text=f"You said: {text}", chunk_size=3)


def make_app(
    home: Path,
    channel: ChatChannel,
    llm: Any,
    *,
    tools: list[Tool] | None = None,
    bus: MemoryBus | None = None,
    **agent: Any,
) -> App:
    config = load_config(home=home, agent={"workspace": home / "workspace", **agent})
    return App(config, channels=[channel], llm=llm, tools=tools or [], bus=bus or TappedBus())
