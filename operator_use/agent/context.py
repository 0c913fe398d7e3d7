"""The system prompt, built from the workspace files.

Files are ordered most stable first so providers can cache the prompt prefix, and the prompt is rebuilt
only when a file's size or modification time changed (one stat pass per turn, in a worker thread).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

# Most stable first: identity and rules rarely change, user notes and memory change often.
PROMPT_FILES = ("SOUL.md", "RULES.md", "AGENTS.md", "CODE.md", "USER.md", "memory/MEMORY.md")
SKILLS_DIR = "skills"

DEFAULT_IDENTITY = (
    "You are operator-use, a personal AI agent running on the user's own machine. You can use tools to "
    "read and write files in your workspace and to run shell commands there. Be concise: your replies "
    "are read in chat apps."
)

Signature = tuple[tuple[str, int, int], ...]


def _signature(workspace: Path) -> Signature:
    entries = []
    for name in PROMPT_FILES:
        try:
            st = os.stat(workspace / name)
            entries.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            continue
    skills = workspace / SKILLS_DIR
    if skills.is_dir():
        for skill in sorted(skills.glob("*/SKILL.md")):
            st = skill.stat()
            entries.append((str(skill.relative_to(workspace)), st.st_mtime_ns, st.st_size))
    return tuple(entries)


def _skill_summary(path: Path) -> str:
    """The `description:` of a SKILL.md front matter, else its first non-heading line."""
    text = path.read_text(encoding="utf-8", errors="replace")
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
    for name, _, _ in signature:
        path = workspace / name
        if name.startswith(SKILLS_DIR + "/"):
            skills.append(f"- {path.parent.name} ({name}): {_skill_summary(path)}")
            continue
        body = path.read_text(encoding="utf-8", errors="replace").strip()
        if body:
            sections.append(f"## {name}\n\n{body}")
    if not any(name == "SOUL.md" for name, _, _ in signature):
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
