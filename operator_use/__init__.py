"""operator-use: a self-hosted personal AI agent reachable from chat platforms and the terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .app import App

__all__ = ["App", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import operator_use` (and the CLI's --help) stays fast.
    if name == "App":
        from .app import App

        return App
    raise AttributeError(name)
