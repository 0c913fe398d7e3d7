"""Built-in tools: files (confined to the workspace unless sandbox=False) and the shell."""

from __future__ import annotations

from ..agent.tools import Tool
from .filesystem import filesystem_tools
from .shell import shell_tools


def builtin_tools(sandbox: bool = True, shell_timeout: int = 60) -> list[Tool]:
    return [*filesystem_tools(sandbox), *shell_tools(shell_timeout)]


__all__ = ["builtin_tools", "filesystem_tools", "shell_tools"]
