"""The gateway: delivers outgoing messages and streams to the channels (see gateway.py)."""

from .clock import Clock, FakeClock, RealClock
from .formatting import render_markdown
from .gateway import Gateway
from .splitting import split_markdown
from .stream_editor import EditorStats, StreamEditor

__all__ = [
    "Clock",
    "EditorStats",
    "FakeClock",
    "Gateway",
    "RealClock",
    "StreamEditor",
    "render_markdown",
    "split_markdown",
]
