"""A message's mrkdwn cut into Block Kit section texts that each render right on their own.

Slack parses each section's mrkdwn by itself: a code block cut in two would leave the lines after the cut
outside any fence in the second section, shown formatted (`*`, `_`, `~` eaten), so an approver would not
see the exact command. The gateway's fence-aware splitter closes a cut code block and reopens it in the
next piece; on top of it, a cut never falls inside one of Slack's escapes (`&amp;`, `&lt;`, `&gt;`) or
inside a `<link|label>`/`<@mention>`, where half of it would show as text.
"""

from __future__ import annotations

import re

from ...gateway.splitting import split_first

# Block Kit's limit on a section's text, in characters.
SECTION_CHARS = 3000
# What must stay whole: an entity, or a <...> link/mention (bounded, so a stray "<" cannot hold a cut back far).
_UNCUTTABLE = re.compile(r"&(?:[A-Za-z]{1,8}|#\d{1,7});|<[^<>\n]{1,600}>")
# A closing fence the splitter appended after a cut inside a code block.
_ADDED_CLOSE = re.compile(r"\n[ \t]*(?:`{3,}|~{3,})\Z")


def sections(text: str, limit: int = SECTION_CHARS) -> list[str]:
    """`text` in pieces of at most `limit` characters, each with its code blocks closed, none cut inside an
    escape or a link. Never empty: a section needs some text."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        head, tail = _split(rest, limit)
        if len(tail) >= len(rest):  # cannot happen with sane limits; never loop forever
            head, tail = rest[:limit], rest[limit:]
        if head.strip():
            pieces.append(head)
        rest = tail
    if rest.strip():
        pieces.append(rest)
    return pieces or [text[:limit] or " "]


def _split(text: str, limit: int) -> tuple[str, str]:
    budget = limit
    while True:
        head, tail = split_first(text, budget)
        cut = _cut(text, head)
        inside = next((m for m in _UNCUTTABLE.finditer(text) if m.start() < cut < m.end()), None)
        if inside is None or budget - (cut - inside.start()) < 1:
            return head, tail
        budget -= cut - inside.start()  # the same split again, ending before the escape


def _cut(text: str, head: str) -> int:
    """Where in `text` the content of `head` ends (a closing fence the splitter added is not content)."""
    if text.startswith(head):
        return len(head)
    added = _ADDED_CLOSE.search(head)
    if added and text.startswith(head[: added.start()]):
        return added.start()
    return 0  # not a prefix (cannot happen): nothing to adjust
