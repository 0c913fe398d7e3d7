"""Hooks around the agent loop: before/after the turn, each LLM call and each tool call.

A `before_tool` hook may return a `ToolResult` to stand in for the call (used to deny or to ask for
approval); every other hook only observes. A hook that raises is logged and ignored: a faulty plugin
must not break a conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..messages import AIMessage, HistoryMessage, ToolCall
from .tools import ToolResult
from .turn import TurnContext

log = logging.getLogger(__name__)

BeforeAgent = Callable[[TurnContext, list[HistoryMessage]], Awaitable[None]]
AfterAgent = Callable[[TurnContext, "Any"], Awaitable[None]]
BeforeLLM = Callable[[TurnContext, list[HistoryMessage]], Awaitable[None]]
AfterLLM = Callable[[TurnContext, AIMessage], Awaitable[None]]
BeforeTool = Callable[[TurnContext, ToolCall], Awaitable[ToolResult | None]]
AfterTool = Callable[[TurnContext, ToolCall, ToolResult], Awaitable[None]]


@dataclass
class Hooks:
    before_agent: list[BeforeAgent] = field(default_factory=list)
    after_agent: list[AfterAgent] = field(default_factory=list)
    before_llm: list[BeforeLLM] = field(default_factory=list)
    after_llm: list[AfterLLM] = field(default_factory=list)
    before_tool: list[BeforeTool] = field(default_factory=list)
    after_tool: list[AfterTool] = field(default_factory=list)

    async def fire(self, name: str, *args: Any) -> None:
        for hook in getattr(self, name):
            try:
                await hook(*args)
            except Exception:
                log.exception("%s hook %r failed", name, hook)

    async def gate_tool(self, ctx: TurnContext, call: ToolCall) -> ToolResult | None:
        for hook in self.before_tool:
            try:
                verdict = await hook(ctx, call)
            except Exception:
                log.exception("before_tool hook %r failed; refusing the call", hook)
                return ToolResult("Error: the call was refused by a failing policy hook.", is_error=True)
            if verdict is not None:
                return verdict
        return None
