"""From the model's markdown to text worth speaking: no markup, no code, and not too long."""

from __future__ import annotations

import re

FULL_TEXT_NOTE = "The full text is in the chat."

_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_INLINE_CODE = re.compile(r"`([^`]*)`")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.MULTILINE)
_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__|~~|\*|_)(?=\S)(.+?)(?<=\S)\1")
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|[\s:|-]*$", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def speakable(markdown: str) -> str:
    text = _FENCE.sub(" (code in the chat) ", markdown)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("a link", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _TABLE_RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _QUOTE.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = text.replace("|", ", ")
    # A line break ends a thought even without punctuation (list items, headings).
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = " ".join(ln if ln[-1] in ".!?:;," else ln + "." for ln in lines)
    return re.sub(r"\s+", " ", text).strip()


def for_speech(markdown: str, max_chars: int, policy: str = "summary") -> str:
    """The text to synthesize for a reply: all of it, or its first sentences plus a pointer to the chat."""
    text = speakable(markdown)
    if policy == "full" or len(text) <= max_chars:
        return text
    budget = max(0, max_chars - len(FULL_TEXT_NOTE) - 1)
    kept: list[str] = []
    used = 0
    for sentence in _SENTENCE_END.split(text):
        if used + len(sentence) + 1 > budget:
            break
        kept.append(sentence)
        used += len(sentence) + 1
    if not kept:
        # One endless first sentence: cut at a word boundary.
        kept = [text[: max(0, budget - 3)].rsplit(" ", 1)[0].rstrip(",;:") + "..."]
    return " ".join(kept) + " " + FULL_TEXT_NOTE
