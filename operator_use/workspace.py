"""The agent's workspace: its files (SOUL.md, RULES.md, memory...) and the template they start from."""

from __future__ import annotations

import shutil
from pathlib import Path

# The repository's top-level `workspace/` folder is the template.
TEMPLATE = Path(__file__).resolve().parent.parent / "workspace"


def ensure_workspace(workspace: Path, template: Path = TEMPLATE) -> list[Path]:
    """Create the workspace and copy in every template file that is missing. Idempotent: existing
    files are never overwritten. Returns the files it created."""
    workspace.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    if not template.is_dir():
        return created
    for src in sorted(template.rglob("*")):
        dst = workspace / src.relative_to(template)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            created.append(dst)
    return created
