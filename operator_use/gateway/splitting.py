"""Cutting markdown into platform-sized messages without breaking what it renders to.

Rules, in order: never cut inside a fenced code block (``` or ~~~); prefer a paragraph break, then a line
break, then the end of a sentence, then a space; only hard-cut when there is nothing better. When a single
code block is longer than a message, it is closed at the cut and reopened (same info string) at the top
of the next chunk, so each chunk renders as a code block on its own.

Lengths are measured on the markdown, in the platform's unit (`measure`: code points, UTF-16 code units
or UTF-8 bytes). Renderers only remove markup (headings, emphasis) or add markup that platforms do not
count (Telegram counts text after entity parsing), so markdown length is a safe upper bound for what the
user sees. Every character is at least one unit in each of them, so a cut found within `fit(...)`
characters is within the limit in units too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Unit = Literal["chars", "utf16", "bytes"]

_OPEN_RE = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
_CLOSE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*$")

# Boundary kinds, best first: (pattern, cut before the match or after it).
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_LINE = re.compile(r"\n")
_SENTENCE = re.compile(r"[.!?…][\"')\]»”’]*(?=\s)")
_WORD = re.compile(r"[ \t]")
_BOUNDARIES: tuple[tuple[re.Pattern[str], bool], ...] = (
    (_PARAGRAPH, False),
    (_LINE, False),
    (_SENTENCE, True),
    (_WORD, False),
)
# Leading blank lines (or spaces) a chunk should not start with once its separator was cut away.
_LEADING_BLANK = re.compile(r"[ \t]*\n(?:[ \t]*\n)*")


def measure(text: str, unit: Unit = "chars") -> int:
    """The length of `text` as a platform counts it."""
    if unit == "utf16":
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    if unit == "bytes":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text)


def fit(text: str, limit: int, unit: Unit = "chars") -> int:
    """How many leading characters of `text` fit in `limit` units (at least one, so a cut always moves on)."""
    if unit == "chars" or measure(text[:limit], unit) <= limit:
        return max(1, min(len(text), limit))
    lo, hi = 0, min(len(text), limit)  # text[:lo] fits, text[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if measure(text[:mid], unit) <= limit:
            lo = mid
        else:
            hi = mid
    return max(1, lo)


@dataclass(frozen=True)
class Fence:
    """A fenced code block: text[start:end] is the block, opener line included, closing line included."""

    start: int  # first char of the opening fence line
    body: int  # first char after the opening line's newline
    close_start: int  # first char of the closing fence line (== end when unclosed)
    end: int  # just after the closing fence (before its newline), or len(text) when still open
    opener: str  # the opening line as written (indentation, marker, info string)
    indent: str
    marker: str  # "```", "~~~~", ...
    closed: bool


def find_fences(text: str) -> list[Fence]:
    """Fenced code blocks in document order. A fence still open at the end (streaming) runs to the end.

    Indentation is not limited to CommonMark's 3 spaces: models indent fences inside list items, and for
    splitting it is safer to over-detect a code block than to cut through one.
    """
    fences: list[Fence] = []
    pos = 0
    cur: tuple[int, int, str, str, str] | None = None  # start, body, opener, indent, marker
    for line in text.split("\n"):
        line_end = pos + len(line)
        if cur is None:
            m = _OPEN_RE.match(line)
            # A backtick fence's info string cannot contain backticks (that would be inline code).
            if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                cur = (pos, min(line_end + 1, len(text)), line, m.group(1), m.group(2))
        else:
            m = _CLOSE_RE.match(line)
            if m and m.group(1)[0] == cur[4][0] and len(m.group(1)) >= len(cur[4]):
                fences.append(Fence(cur[0], cur[1], pos, line_end, cur[2], cur[3], cur[4], True))
                cur = None
        pos = line_end + 1
    if cur is not None:
        fences.append(Fence(cur[0], cur[1], len(text), len(text), cur[2], cur[3], cur[4], False))
    return fences


def _outside(fences: list[Fence], i: int) -> bool:
    return all(i <= f.start or i >= f.end for f in fences)


def safe_cut(text: str, limit: int, fences: list[Fence] | None = None) -> int:
    """Where to end a chunk of at most `limit` chars: the best boundary outside code blocks.

    Returns len(text) when it already fits, 0 when no boundary exists outside a code block (the caller
    must then cut inside the block, see `split_first`). A boundary in the second half of the window is
    preferred so chunks are not needlessly short.
    """
    if len(text) <= limit:
        return len(text)
    if fences is None:
        fences = find_fences(text)
    window = text[: limit + 64]  # a little lookahead so a "\n\n" straddling the limit is seen
    for lo in (limit // 2, 1):
        for pattern, after in _BOUNDARIES:
            best = 0
            for m in pattern.finditer(window):
                i = m.end() if after else m.start()
                if i > limit:
                    break
                if i >= lo and _outside(fences, i) and text[:i].strip():
                    best = i
            if best:
                return best
    return 0


def trim_tail(tail: str) -> str:
    """Drop the separator a cut left at the start of the next chunk, keeping the next line's indentation."""
    m = _LEADING_BLANK.match(tail)
    if m:
        return tail[m.end() :]
    return tail.lstrip(" \t")


def _cut_in_fence(text: str, f: Fence, limit: int) -> tuple[str, str] | None:
    """Cut inside code block `f`: close it at the cut, reopen it (same opener) at the top of the tail."""
    close = "\n" + f.indent + f.marker
    budget = limit - len(close)
    if budget <= f.body:
        return None  # the opener leaves no room for even one character of code in this chunk
    # A line break inside the block, leaving at least one char of code here and some code for the tail
    # (never the line right before the closing fence: that would reopen an empty block).
    stop = min(budget, f.close_start - 1 if f.closed else len(text))
    j = text.rfind("\n", f.body + 1, stop)
    if j > f.body:
        return text[:j] + close, f.opener + "\n" + text[j + 1 :]
    # One code line longer than the message: hard-cut the line.
    return text[:budget] + close, f.opener + "\n" + text[budget:]


def split_first(text: str, limit: int, unit: Unit = "chars") -> tuple[str, str]:
    """Split off the first chunk (<= limit units, renders on its own). Returns (head, rest); rest may be ""."""
    if limit < 1:
        raise ValueError("limit must be positive")
    if measure(text, unit) <= limit:
        return text, ""
    limit = fit(text, limit, unit)  # in characters from here on
    fences = find_fences(text)
    # A code block that crosses the limit and is longer than a whole message will be cut anyway: cut it
    # here, filling this chunk, instead of leaving a short chunk in front of it.
    for f in fences:
        if f.start >= limit:
            break
        if f.end > limit and f.end - f.start > limit:
            cut = _cut_in_fence(text, f, limit)
            if cut:
                return cut
            break
    i = safe_cut(text, limit, fences)
    if i > 0:
        return text[:i].rstrip(), trim_tail(text[i:])
    # No boundary outside code: we are at the start of an oversized code block (or tiny limits).
    for f in fences:
        if f.start < limit < f.end:
            cut = _cut_in_fence(text, f, limit)
            if cut:
                return cut
    return text[:limit], text[limit:]


def split_markdown(text: str, max_length: int, unit: Unit = "chars") -> list[str]:
    """Cut `text` into chunks of at most `max_length` units. Whitespace-only chunks are dropped."""
    chunks: list[str] = []
    rest = text
    while measure(rest, unit) > max_length:
        head, tail = split_first(rest, max_length, unit)
        if len(tail) >= len(rest):  # cannot happen with sane limits; never loop forever
            n = fit(rest, max_length, unit)
            head, tail = rest[:n], rest[n:]
        if head.strip():
            chunks.append(head)
        rest = tail
    if rest.strip():
        chunks.append(rest)
    return chunks


def last_paragraph_break(text: str) -> int:
    """Index of the last paragraph break outside code blocks (text[:i] is whole paragraphs), or 0."""
    return ParagraphTracker().update(text)


class ParagraphTracker:
    """`last_paragraph_break` for a text that only grows, in O(new text) per call.

    A non-editing stream asks "is a paragraph complete?" after every delta; rescanning the whole buffer
    each time would be quadratic in a long code block. This scans each complete line once, keeping the
    fence state. Call `reset()` whenever the text is replaced rather than appended to.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pos = 0  # start of the first line not scanned yet
        self._fence: str | None = None  # marker of the open code block, if any
        self._content = False  # a non-blank line was seen (a break needs text before it)
        self._last = 0

    def update(self, text: str) -> int:
        while (nl := text.find("\n", self._pos)) >= 0:
            line = text[self._pos : nl]
            if self._fence is None:
                m = _OPEN_RE.match(line)
                if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                    self._fence = m.group(2)
                    self._content = True
                elif line.strip(" \t"):
                    self._content = True
                elif self._pos > 0 and self._content:
                    self._last = self._pos - 1  # the newline that ends the paragraph
            else:
                m = _CLOSE_RE.match(line)
                if m and m.group(1)[0] == self._fence[0] and len(m.group(1)) >= len(self._fence):
                    self._fence = None
            self._pos = nl + 1
        return self._last


def balanced(chunk: str) -> bool:
    """True when every code block opened in `chunk` is also closed in it (used by tests and asserts)."""
    return all(f.closed for f in find_fences(chunk))
