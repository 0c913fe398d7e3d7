"""Control characters in text the agent did not write (a model's error body, a fetched page quoted in a
reply, a log record) made harmless for a terminal: such text must not move the cursor, retitle the window
or clear the screen.

Both forms cover the C0 controls but tab and newline (ESC among them), DEL and the C1 controls:
`visible` for a screen (caret notation, ^[ for ESC, as prompt_toolkit shows them; a C1 control as U+FFFD),
`escaped` for a file (a backslash escape, \\x1b, that `cat` or `tail -f` print as text).
"""

from __future__ import annotations

import re

CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    return CONTROLS.sub(lambda m: "^" + chr((ord(m.group()) + 64) % 128) if ord(m.group()) < 128 else "\ufffd", text)


def escaped(text: str) -> str:
    return CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
