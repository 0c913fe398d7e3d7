"""A finished reply as the terminal shows it: markdown rendered by rich, under the reply prefix."""

from __future__ import annotations

import io

# A reply (which may quote a fetched page) must not move the cursor, retitle the window or rewrite the
# screen: its control characters are shown as the caret notation the prompt uses.
from ...controls import visible

__all__ = ["render_reply", "visible"]


def render_reply(text: str, *, prefix: str, width: int) -> str:
    """`text` rendered as markdown in `width` columns: the first line after `prefix`, the others indented
    under it, and a blank line after it. Colours follow the environment (TERM, NO_COLOR)."""
    from rich.console import Console
    from rich.markdown import Markdown

    indent = len(prefix)
    out = io.StringIO()
    console = Console(
        file=out,
        width=max(20, width - indent),
        force_terminal=True,  # `out` is a buffer; the text goes to the terminal
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )
    markdown = Markdown(visible(text), hyperlinks=False)
    for token in markdown.parsed:  # a newline is a line break, as in the web chat (markdown-it's `breaks`)
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"
    console.print(markdown)
    # rich pads every line to the width; unstyled padding goes (a narrower window would wrap it into
    # empty rows), a code block's background stays.
    lines = [line.rstrip(" ") for line in out.getvalue().rstrip("\n").split("\n")]
    body = [prefix + lines[0], *((" " * indent + line if line else "") for line in lines[1:])]
    return "\n".join(body) + "\n\n"
