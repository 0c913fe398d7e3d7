"""The terminal channel's settings and the one question every caller asks first: is there a terminal?"""

from __future__ import annotations

import sys
from typing import IO

from pydantic import Field

from ..base import ChannelConfig

LOCAL_USER = "local"
CHAT_ID = "terminal"
NO_TERMINAL = "terminal chat off: stdin is not a terminal"
HISTORY_FILE = "terminal_history"


class CLIConfig(ChannelConfig):
    enabled: bool = True
    # The terminal is the machine's owner: allowed and admin by default, nobody else.
    allow_from: list[str] = Field(default_factory=lambda: [LOCAL_USER])
    admins: list[str] = Field(default_factory=lambda: [LOCAL_USER])
    edit_interval: float | None = 0.05
    prompt: str = "you> "
    reply_prefix: str = "agent> "
    # Typed messages are kept in <data home>/terminal_history (mode 0600) for Up/Down and Ctrl-R.
    history: bool = True


def stdin_is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether `stream` (default: this process's stdin, None when it was closed) is a terminal."""
    stream = sys.stdin if stream is None else stream
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # a closed stream
        return False
