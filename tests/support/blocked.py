"""A Python that cannot import some modules: what a user who skipped an optional extra has.

`blocked_env` writes a `sitecustomize.py` into a directory put first on PYTHONPATH; it installs a meta path
finder refusing those modules (and their submodules) before anything else is imported, so the real
program runs unchanged and meets the missing package exactly where it would."""

from __future__ import annotations

from pathlib import Path

SITECUSTOMIZE = """
import sys

BLOCKED = {blocked!r}


class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Blocked())
"""


def blocked_env(where: Path, *modules: str) -> dict[str, str]:
    where.mkdir(parents=True, exist_ok=True)
    (where / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=set(modules)))
    return {"PYTHONPATH": str(where)}
