"""Workspace files that become the system prompt of every later turn, and the file tools' last check.

The approval gate resolves a write's target before the call (symlinks and '..' followed, as the tool
will) and asks when it is a prompt file. The file tool checks again on the path it really writes,
against what the gate granted this very call: a context variable set in the call's task, which
`asyncio.to_thread` carries into the tool's thread. So a symlink swapped in while the person was
deciding cannot turn an approved write, or an unguarded one, into a write of another prompt file.
Without the gate (the tools used on their own) there is no grant and no check.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from ..agent.tools import ToolError


@dataclass(frozen=True)
class PromptFiles:
    """Workspace-relative names or fnmatch patterns, compared case-insensitively."""

    patterns: tuple[str, ...]

    def match(self, workspace: Path, path: Path) -> str | None:
        """The prompt file that `path` (resolved: no symlink, no '..') is, or None. Does file IO."""
        root = Path(os.path.realpath(workspace))
        if path.is_relative_to(root):
            rel = path.relative_to(root).as_posix()
            for pattern in self.patterns:
                if fnmatch.fnmatchcase(rel.casefold(), pattern.casefold()):
                    return rel
        for pattern in self.patterns:
            # A prompt file may itself be a symlink: writing its target changes the prompt (context.py
            # reads it only inside the workspace; asking about a target elsewhere costs nothing).
            if not any(c in pattern for c in "*?[") and Path(os.path.realpath(root / pattern)) == path:
                return pattern
        return None


@dataclass(frozen=True)
class WriteGrant:
    files: PromptFiles
    approved: frozenset[Path]


_grant: ContextVar[WriteGrant | None] = ContextVar("prompt_write_grant", default=None)


def grant_writes(files: PromptFiles, approved: Iterable[Path]) -> None:
    """Set by the gate in the task of the call it lets run: the prompt files this call may write."""
    _grant.set(WriteGrant(files, frozenset(approved)))


def check_write(workspace: Path, path: Path, shown: str) -> None:
    """Raise unless the gate let this call write `path` (resolved), when it is a prompt file."""
    grant = _grant.get()
    if grant is None or path in grant.approved:
        return
    name = grant.files.match(workspace, path)
    if name is not None:
        raise ToolError(
            f"{shown!r} is now the prompt file {name}, which this call was not approved to write "
            "(the path changed after the approval check); nothing was written"
        )
