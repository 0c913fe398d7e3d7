"""Tools the model can call: a pydantic model for the parameters, a function for the work.

Sync tools run in a worker thread so they never block the event loop. A tool that raises returns the
error to the model as a tool result; it never ends the turn.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..providers.llm.base import ToolSchema
from .turn import TurnContext

log = logging.getLogger(__name__)

ToolFunc = Callable[[TurnContext, Any], Any] | Callable[[TurnContext, Any], Awaitable[Any]]


class ToolError(Exception):
    """An expected failure with a message meant for the model (bad path, timeout...)."""


@dataclass
class ToolResult:
    content: str
    is_error: bool = False


class Tool:
    """A named, described function with a pydantic parameter model."""

    def __init__(
        self,
        name: str,
        description: str,
        params: type[BaseModel],
        func: ToolFunc,
        *,
        risk: str = "low",
        max_output: int = 16_000,
    ) -> None:
        self.name = name
        self.description = description
        self.params = params
        self.func = func
        self.risk = risk
        self.max_output = max_output
        self.is_async = inspect.iscoroutinefunction(func)
        self._schema: ToolSchema | None = None

    @property
    def schema(self) -> ToolSchema:
        if self._schema is None:
            parameters = self.params.model_json_schema()
            parameters.pop("title", None)
            self._schema = ToolSchema(self.name, self.description, parameters)
        return self._schema

    async def run(self, ctx: TurnContext, arguments: dict[str, Any]) -> ToolResult:
        try:
            params = self.params.model_validate(arguments)
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            return ToolResult(f"Invalid arguments for {self.name}: {errors}", is_error=True)
        try:
            if self.is_async:
                out = await self.func(ctx, params)
            else:
                # Copy the context so the contextvar (current_turn) is visible inside the thread.
                out = await asyncio.to_thread(self.func, ctx, params)
        except asyncio.CancelledError:
            raise
        except ToolError as exc:
            return ToolResult(f"Error: {exc}", is_error=True)
        except Exception as exc:  # a tool bug must not end the turn
            log.warning("tool %s failed: %s", self.name, exc, exc_info=True)
            return ToolResult(f"Error: {type(exc).__name__}: {exc}", is_error=True)
        text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, default=str)
        if len(text) > self.max_output:
            text = text[: self.max_output] + f"\n... [output truncated, {len(text) - self.max_output} more characters]"
        return ToolResult(text)


def tool(name: str, description: str, params: type[BaseModel], **kw: Any) -> Callable[[ToolFunc], Tool]:
    """Decorator form: `@tool("read_file", "...", ReadParams)` over `def f(ctx, params)`."""

    def wrap(func: ToolFunc) -> Tool:
        return Tool(name, description, params, func, **kw)

    return wrap


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: list[ToolSchema] | None = None
        # Applied to every result before the model (and the history) sees it: masks secrets.
        self.redact: Callable[[str], str] | None = None
        for t in tools:
            self.register(t)

    def register(self, t: Tool) -> None:
        self._tools[t.name] = t
        self._schemas = None

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)
        self._schemas = None

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[ToolSchema]:
        # Cached: tool schemas are rebuilt only when the set of tools changes.
        if self._schemas is None:
            self._schemas = [t.schema for t in self._tools.values()]
        return self._schemas

    async def call(self, ctx: TurnContext, name: str, arguments: dict[str, Any]) -> ToolResult:
        t = self._tools.get(name)
        if t is None:
            return ToolResult(f"Error: unknown tool {name!r}. Available: {', '.join(self._tools)}", is_error=True)
        result = await t.run(ctx, arguments)
        if self.redact is not None:
            result.content = self.redact(result.content)
        return result
