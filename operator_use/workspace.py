"""The agent's workspace: its files (SOUL.md, RULES.md, memory...) and the template they start from."""

from __future__ import annotations

import shutil
from pathlib import Path

# Shipped inside the package (package data), so a wheel install has it as well as a checkout.
TEMPLATE = Path(__file__).resolve().parent / "workspace_template"


class TemplateMissing(RuntimeError):
    """The workspace template is not where the package should carry it: a broken install."""


def ensure_workspace(workspace: Path, template: Path = TEMPLATE) -> list[Path]:
    """Create the workspace and copy in every template file that is missing. Idempotent: existing
    files are never overwritten. Returns the files it created."""
    if not template.is_dir() or not any(template.iterdir()):
        # Saying "complete" over an empty workspace would hide a broken install.
        raise TemplateMissing(f"the workspace template is missing ({template}); reinstall operator-use")
    workspace.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    for src in sorted(template.rglob("*")):
        dst = workspace / src.relative_to(template)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            created.append(dst)
    return created
