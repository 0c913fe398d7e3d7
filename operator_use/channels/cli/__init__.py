"""The terminal chat: `operator-use chat`, and the `cli` channel of `operator-use run` on a terminal.

`config.py` (settings, the terminal check; light, imported by the configuration), `channel.py` (the
channel), `screen.py` (prompt_toolkit: the input line, the reply being written, output above the prompt),
`render.py` (a finished reply as rich markdown), `history.py` (the input history file).
"""

from .channel import TerminalChannel
from .config import CHAT_ID, LOCAL_USER, NO_TERMINAL, CLIConfig, stdin_is_terminal

__all__ = ["CHAT_ID", "LOCAL_USER", "NO_TERMINAL", "CLIConfig", "TerminalChannel", "stdin_is_terminal"]
