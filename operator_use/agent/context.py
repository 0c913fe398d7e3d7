"""The system prompt, built from the workspace files.

Files are ordered most stable first so providers can cache the prompt prefix, and the prompt is rebuilt
only when a file's size or modification time changed (one stat pass per turn, in a worker thread).

The files are opened the way read_file opens them (tools/paths.py, sandboxed): a run_shell command can
plant `USER.md -> <data home>/config.yaml` or `AGENTS.md -> /proc/self/environ` even when its sandbox
cannot read those, and the prompt goes to the LLM provider on every turn. So a prompt file or SKILL.md
that resolves outside the workspace, is a hard link, a FIFO or anything but a regular file is left out
with a warning in the log, and each file is read only up to a cap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from pathlib import Path

from ..tools.paths import open_regular_file, resolve_in_workspace, workspace_root
from .tools import ToolError

log = logging.getLogger(__name__)

# The agent keeps this one up to date itself (memory); the others are written by the person running it.
MEMORY_FILE = "memory/MEMORY.md"
# Most stable first: identity and rules rarely change, user notes and memory change often.
PROMPT_FILES = ("SOUL.md", "RULES.md", "AGENTS.md", "CODE.md", "USER.md", MEMORY_FILE)
SKILLS_DIR = "skills"
FILE_CAP = 64 * 1024  # bytes of one prompt file that reach the prompt: a runaway MEMORY.md cannot fill it
SKILL_HEAD = 4 * 1024  # a SKILL.md is only indexed: its front matter or first line is enough

DEFAULT_IDENTITY = (
    "You are operator-use, a personal AI agent running on the user's own machine. You can use tools to "
    "read and write files in your workspace and to run shell commands there. Be concise: your replies "
    "are read in chat apps."
)

# (workspace-relative name, inode, mtime, ctime, size): ctime and inode also change when a symlink or
# hard link is swapped in with the same size and mtime.
Signature = tuple[tuple[str, int, int, int, int], ...]


def _entry(name: str, path: Path) -> tuple[str, int, int, int, int] | None:
    try:
        st = os.stat(path)  # no open: a FIFO cannot hang a stat
    except (OSError, ValueError):
        return None
    return (name, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _signature(workspace: Path) -> Signature:
    root = workspace_root(workspace)
    entries = [e for name in PROMPT_FILES if (e := _entry(name, root / name)) is not None]
    skills = Path(os.path.realpath(root / SKILLS_DIR))
    if not skills.is_relative_to(root):
        # Not listed at all; the entry alone makes _build log why the skills are missing.
        entries.append((SKILLS_DIR, 0, 0, 0, 0))
    elif skills.is_dir():
        for skill in sorted(skills.glob("*/SKILL.md")):
            entry = _entry(f"{SKILLS_DIR}/{skill.parent.name}/SKILL.md", skill)
            if entry is not None:
                entries.append(entry)
    return tuple(entries)


def _read(workspace: Path, name: str, cap: int) -> tuple[str, bool] | None:
    """The first `cap` bytes of a workspace file and whether there was more, or None when it is refused."""
    try:
        path = resolve_in_workspace(workspace, name, must_exist=True)
        fd, _ = open_regular_file(workspace, path, shown=name)
    except ToolError as exc:
        log.warning("%s is left out of the system prompt: %s", name, exc)
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(cap + 1)
    except OSError as exc:  # EIO and the like: one unreadable file does not fail every turn
        log.warning("%s is left out of the system prompt: %s", name, exc)
        return None
    if len(data) <= cap:
        return data.decode("utf-8", errors="replace"), False
    data = data[:cap]
    end = data.rfind(b"\n")
    return data[: end if end > 0 else cap].decode("utf-8", errors="replace"), True


def _skill_summary(text: str) -> str:
    """The `description:` of a SKILL.md front matter, else its first non-heading line."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        for line in lines[1:]:
            if line.strip() == "---":
                break
            if line.lower().startswith("description:"):
                return line.split(":", 1)[1].strip()
    for line in lines:
        if line.strip() and not line.startswith(("#", "---")):
            return line.strip()
    return ""


def _build(workspace: Path, signature: Signature) -> str:
    sections = []
    skills = []
    has_soul = False
    for name, *_ in signature:
        if name == SKILLS_DIR:
            log.warning("%s/ resolves outside the workspace; no skill is listed in the system prompt", SKILLS_DIR)
            continue
        if name.startswith(SKILLS_DIR + "/"):
            read = _read(workspace, name, SKILL_HEAD)
            if read is not None:
                skills.append(f"- {name.split('/')[1]} ({name}): {_skill_summary(read[0])}")
            continue
        read = _read(workspace, name, FILE_CAP)
        if read is None:
            continue
        has_soul = has_soul or name == "SOUL.md"
        body, cut = read[0].strip(), read[1]
        if cut:
            log.warning("%s is over %d KB; only its start is in the system prompt", name, FILE_CAP // 1024)
            body += f"\n\n[{name} is longer than {FILE_CAP // 1024} KB; the rest is left out]"
        if body:
            sections.append(f"## {name}\n\n{body}")
    if not has_soul:
        sections.insert(0, DEFAULT_IDENTITY)
    if skills:
        # Skills go before the frequently edited USER/MEMORY files to keep the cached prefix long.
        at = next((i for i, s in enumerate(sections) if s.startswith(("## USER.md", "## memory/"))), len(sections))
        sections.insert(at, "## Skills\n\nRead a skill's SKILL.md before using it.\n" + "\n".join(skills))
    sections.append(f"Workspace: {workspace}")
    return "\n\n".join(sections)


class ContextBuilder:
    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)
        self._signature: Signature | None = None
        self._prompt = ""

    async def system_prompt(self) -> str:
        signature = await asyncio.to_thread(_signature, self.workspace)
        if signature != self._signature:
            self._prompt = await asyncio.to_thread(_build, self.workspace, signature)
            self._signature = signature
        # The date goes last, so the changing part never invalidates the cached prefix.
        return f"{self._prompt}\n\nToday is {dt.date.today().isoformat()}."
