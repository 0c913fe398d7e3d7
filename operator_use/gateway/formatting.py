"""Render the model's markdown for each platform's formatting dialect.

The markdown is parsed with markdown-it (CommonMark + strikethrough + tables) and the syntax tree is
rendered by a small per-dialect `_Style`. Rendering from a tree, with all text escaped, is what makes
partial markdown safe while streaming: an unclosed ``` is parsed as a code block running to the end and
still becomes a closed <pre>, an unclosed ** stays literal text; the output is always well formed.

Dialects (`Capabilities.formatting`):
- "telegram_html": Telegram's HTML subset (b, i, s, code, pre, a, blockquote); lists as bullets, headings bold.
- "slack_mrkdwn": *bold*, _italic_, ~strike~, `code`, ```pre``` (fences on lines of their own, so code starting
  or ending with a backtick cannot merge into them), <url|text>, with &, <, > escaped.
- "discord", "markdown": passed through unchanged (the platform renders markdown itself).
- "plain": markup stripped to readable text; code blocks keep their fences, the only sign of where the code
  starts and ends on a chat that shows everything as one line (Twitch).
"""

from __future__ import annotations

import logging
import re

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

log = logging.getLogger(__name__)

PASS_THROUGH = frozenset({"markdown", "discord"})

# html=False: raw HTML the model writes is shown as text (escaped), never interpreted.
_MD = MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])

_TELEGRAM_SCHEMES = ("http://", "https://", "tg://")
_LANG_RE = re.compile(r"[^\w#+.-]")


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fenced(raw: str) -> str:
    """A fenced block `raw` cannot close: the fence is longer than any backtick run in it."""
    longest = max((len(m) for m in re.findall(r"`+", raw)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{raw}\n{fence}"


class _Style:
    """Plain text: the base style, every markup hook returns its content as readable text."""

    bullet = "• "
    hr_text = "———"

    def text(self, s: str) -> str:
        return s

    def bold(self, s: str) -> str:
        return s

    def italic(self, s: str) -> str:
        return s

    def strike(self, s: str) -> str:
        return s

    def code(self, raw: str) -> str:
        return raw

    def pre(self, raw: str, lang: str) -> str:
        return _fenced(raw)

    def link(self, inner: str, href: str, plain_inner: str) -> str:
        if not href or plain_inner.strip() == href or href == f"mailto:{plain_inner.strip()}":
            return inner
        return f"{inner} ({self.text(href)})"

    def heading(self, inner: str, level: int) -> str:
        return inner

    def quote(self, inner: str) -> str:
        return "\n".join("> " + line if line else ">" for line in inner.split("\n"))

    def table_header(self, inner: str) -> str:
        return inner


class _TelegramHTML(_Style):
    def text(self, s: str) -> str:
        return _html_escape(s)

    def bold(self, s: str) -> str:
        return f"<b>{s}</b>"

    def italic(self, s: str) -> str:
        return f"<i>{s}</i>"

    def strike(self, s: str) -> str:
        return f"<s>{s}</s>"

    def code(self, raw: str) -> str:
        return f"<code>{_html_escape(raw)}</code>"

    def pre(self, raw: str, lang: str) -> str:
        lang = _LANG_RE.sub("", lang)
        if lang:
            return f'<pre><code class="language-{lang}">{_html_escape(raw)}</code></pre>'
        return f"<pre>{_html_escape(raw)}</pre>"

    def link(self, inner: str, href: str, plain_inner: str) -> str:
        # Telegram rejects the whole message for an <a> it cannot open: only link what it accepts.
        if href.lower().startswith(_TELEGRAM_SCHEMES):
            return f'<a href="{_html_escape(href).replace(chr(34), "&quot;")}">{inner}</a>'
        return super().link(inner, href, plain_inner)

    def heading(self, inner: str, level: int) -> str:
        return f"<b>{inner}</b>"

    def quote(self, inner: str) -> str:
        return f"<blockquote>{inner}</blockquote>"

    def table_header(self, inner: str) -> str:
        return f"<b>{inner}</b>"


class _SlackMrkdwn(_Style):
    def text(self, s: str) -> str:
        return _html_escape(s)  # Slack wants exactly &, <, > escaped

    def bold(self, s: str) -> str:
        return f"*{s}*"

    def italic(self, s: str) -> str:
        return f"_{s}_"

    def strike(self, s: str) -> str:
        return f"~{s}~"

    def code(self, raw: str) -> str:
        return f"`{_html_escape(raw)}`"

    def pre(self, raw: str, lang: str) -> str:
        # Slack has no language hint, and only ``` fences: each on a line of its own, so a backtick at
        # either end of the code cannot join them (Slack does not show those two line breaks).
        return f"```\n{_html_escape(raw)}\n```"

    def link(self, inner: str, href: str, plain_inner: str) -> str:
        if not href.lower().startswith(("http://", "https://", "mailto:")):
            return super().link(inner, href, plain_inner)  # Slack cannot open relative links
        # Link text is shown literally by Slack; "|" and ">" would end it early.
        label = _html_escape(plain_inner.replace("|", "¦")).strip()
        url = _html_escape(href).replace("|", "%7C")
        return f"<{url}|{label}>" if label and label != url else f"<{url}>"

    def heading(self, inner: str, level: int) -> str:
        return f"*{inner}*"

    def table_header(self, inner: str) -> str:
        return f"*{inner}*"


_STYLES: dict[str, _Style] = {
    "plain": _Style(),
    "telegram_html": _TelegramHTML(),
    "slack_mrkdwn": _SlackMrkdwn(),
}
_PLAIN = _STYLES["plain"]


class _Renderer:
    def __init__(self, style: _Style) -> None:
        self.s = style

    # --- blocks ---

    def blocks(self, nodes: list[SyntaxTreeNode], sep: str = "\n\n") -> str:
        return sep.join(out for out in (self.block(n) for n in nodes) if out)

    def block(self, node: SyntaxTreeNode) -> str:
        t = node.type
        if t == "paragraph":
            return self.inline_of(node)
        if t == "heading":
            return self.s.heading(self.inline_of(node), int(node.tag[1:]) if node.tag[1:].isdigit() else 1)
        if t in ("bullet_list", "ordered_list"):
            return self.list_(node)
        if t == "blockquote":
            return self.s.quote(self.blocks(node.children))
        if t == "fence":
            return self.s.pre(node.content.rstrip("\n"), (node.info or "").split(" ")[0])
        if t == "code_block":
            return self.s.pre(node.content.rstrip("\n"), "")
        if t == "hr":
            return self.s.hr_text
        if t == "table":
            return self.table(node)
        if t == "html_block":
            return self.s.text(node.content.rstrip("\n"))
        return self.blocks(node.children) if node.children else self.s.text(node.content)

    def list_(self, node: SyntaxTreeNode) -> str:
        ordered = node.type == "ordered_list"
        start = int(node.attrs.get("start", 1) or 1) if ordered else 1
        lines: list[str] = []
        for idx, item in enumerate(node.children):
            marker = f"{start + idx}. " if ordered else self.s.bullet
            pad = " " * len(marker)
            parts: list[str] = []
            for child in item.children:
                out = self.block(child)
                if not out:
                    continue
                # Later blocks of an item (nested lists, more paragraphs) are indented under its marker;
                # code is left alone, indenting it would change it.
                if parts and child.type not in ("fence", "code_block"):
                    out = "\n".join(pad + line if line else line for line in out.split("\n"))
                parts.append(out)
            # Tight lists (hidden paragraphs) keep items on consecutive lines.
            tight = all(c.hidden for c in item.children if c.type == "paragraph")
            body = ("\n" if tight else "\n\n").join(parts)
            lines.append(marker + body)
        return "\n".join(lines)

    def table(self, node: SyntaxTreeNode) -> str:
        rows: list[str] = []
        for section in node.children:
            for tr in section.children:
                cells = [self.inline_of(cell) for cell in tr.children]
                row = " | ".join(cells)
                rows.append(self.s.table_header(row) if section.type == "thead" and row else row)
        return "\n".join(rows)

    # --- inline ---

    def inline_of(self, node: SyntaxTreeNode) -> str:
        return "".join(self.inline(c) for c in node.children)

    def inline(self, node: SyntaxTreeNode) -> str:
        t = node.type
        if t == "inline":
            return self.inline_of(node)
        if t in ("text", "text_special"):
            return self.s.text(node.content)
        if t in ("softbreak", "hardbreak"):
            return "\n"
        if t == "strong":
            return self.s.bold(self.inline_of(node))
        if t == "em":
            return self.s.italic(self.inline_of(node))
        if t == "s":
            return self.s.strike(self.inline_of(node))
        if t == "code_inline":
            return self.s.code(node.content)
        if t in ("link", "image"):
            href = str(node.attrs.get("href") or node.attrs.get("src") or "")
            inner = self.inline_of(node) or self.s.text("image" if t == "image" else href)
            plain = _Renderer(_PLAIN).inline_of(node) or ("image" if t == "image" else href)
            return self.s.link(inner, href, plain)
        if t == "html_inline":
            return self.s.text(node.content)
        return self.inline_of(node) if node.children else self.s.text(node.content)


def render_markdown(text: str, style: str) -> str:
    """Render markdown `text` in `style` (the whole text: partial markdown still renders well formed)."""
    if style in PASS_THROUGH or not text:
        return text
    st = _STYLES.get(style)
    if st is None:
        log.warning("unknown formatting %r: text passed through", style)
        return text
    tree = SyntaxTreeNode(_MD.parse(text))
    return _Renderer(st).blocks(tree.children).strip()
