"""Built-in tools: files (confined to the workspace unless sandbox=False), the shell, the web, and, when
the App provides their runtime, background processes, ask_user and send_message/send_file."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..agent.tools import Tool
from .config import ToolsConfig
from .filesystem import filesystem_tools
from .sandbox import Isolation
from .shell import shell_tools

if TYPE_CHECKING:
    from .ask_user import AskUser
    from .messaging import Messenger
    from .processes import ProcessManager


@dataclass
class ToolRuntime:
    """Objects tools share with the rest of the App (the orchestrator calls into them too)."""

    isolation: Isolation
    processes: ProcessManager | None = None
    asks: AskUser | None = None
    messenger: Messenger | None = None


def builtin_tools(
    sandbox: bool = True,
    shell_timeout: int = 60,
    *,
    config: ToolsConfig | None = None,
    runtime: ToolRuntime | None = None,
) -> list[Tool]:
    from .web import web_tools  # lazy: httpx and the search client are not needed for --help

    config = config or ToolsConfig()
    isolation = runtime.isolation if runtime is not None else Isolation(config.shell)
    tools = [
        *filesystem_tools(sandbox),
        *shell_tools(shell_timeout, isolation),
        *web_tools(config.web_fetch, config.web_search),
    ]
    if runtime is not None:
        for part in (runtime.processes, runtime.asks, runtime.messenger):
            if part is not None:
                tools.extend(part.tools())
    return tools


def select_tools(tools: Iterable[Tool], allowed: list[str] | str) -> list[Tool]:
    """The tools named by `agent.tools` (names or fnmatch patterns; "*" keeps all)."""
    if allowed == "*":
        return list(tools)
    return [t for t in tools if any(fnmatch.fnmatchcase(t.name, p) for p in allowed)]


__all__ = ["ToolRuntime", "builtin_tools", "filesystem_tools", "select_tools", "shell_tools"]
