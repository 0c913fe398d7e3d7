import re
from html.parser import HTMLParser

import pytest

from operator_use.gateway.formatting import render_markdown

TELEGRAM_TAGS = {"b", "i", "s", "u", "code", "pre", "a", "blockquote"}


class _TagChecker(HTMLParser):
    """Checks output is well formed and uses only Telegram's tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in TELEGRAM_TAGS:
            self.errors.append(f"tag {tag}")
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")


def assert_valid_telegram_html(html: str) -> None:
    checker = _TagChecker()
    checker.feed(html)
    checker.close()
    assert not checker.errors, (checker.errors, html)
    assert not checker.stack, (checker.stack, html)
    # no raw "<" or "&" that is not part of a tag or an entity
    text_only = re.sub(r"</?(b|i|s|u|code|pre|a|blockquote)( [^>]*)?>", "", html)
    assert "<" not in text_only and ">" not in text_only, html
    assert not re.search(r"&(?!amp;|lt;|gt;|quot;)", text_only), html


def tg(md: str) -> str:
    return render_markdown(md, "telegram_html")


def test_telegram_inline_styles():
    assert tg("**bold** and *it* and ~~gone~~ and `x<y`") == (
        "<b>bold</b> and <i>it</i> and <s>gone</s> and <code>x&lt;y</code>"
    )


def test_telegram_escapes_text():
    assert tg("a < b && c > d <script>") == "a &lt; b &amp;&amp; c &gt; d &lt;script&gt;"


def test_telegram_pre_with_language_and_link():
    out = tg('```python\nif a < b:\n    print("&")\n```\n\nsee [docs](https://x.org/?a=1&b=2)')
    assert '<pre><code class="language-python">if a &lt; b:\n    print("&amp;")</code></pre>' in out
    assert '<a href="https://x.org/?a=1&amp;b=2">docs</a>' in out
    assert_valid_telegram_html(out)


def test_telegram_headings_lists_quotes():
    out = tg("# Title\n\n- one\n- two\n\n1. first\n2. second\n\n> wise words")
    assert "<b>Title</b>" in out
    assert "• one\n• two" in out
    assert "1. first\n2. second" in out
    assert "<blockquote>wise words</blockquote>" in out
    assert_valid_telegram_html(out)


def test_telegram_unsupported_link_scheme_is_text():
    out = tg("[file](./local.txt)")
    assert "<a" not in out and "file (./local.txt)" in out


@pytest.mark.parametrize(
    "partial",
    [
        "Here is code:\n\n```python\nx = 1 < 2",  # unclosed fence
        "**bold but not closed",
        "[link text](https://exa",
        "`inline not closed <",
        "> quote\n> - list in quote **b",
        "| a | b |\n|---|---|\n| 1 <",
        "1. item\n   ```\n   code <",
    ],
)
def test_partial_markdown_renders_valid_html(partial):
    for cut in range(1, len(partial) + 1):
        assert_valid_telegram_html(tg(partial[:cut]))


def test_unclosed_fence_renders_as_pre():
    assert tg("```py\nx = 1") == '<pre><code class="language-py">x = 1</code></pre>'


def test_slack_mrkdwn():
    out = render_markdown("**b** *i* ~~s~~ `c` [t](https://x.y) a & b < c\n\n```\nx > 1\n```", "slack_mrkdwn")
    assert out.startswith("*b* _i_ ~s~ `c` <https://x.y|t> a &amp; b &lt; c")
    assert "```\nx &gt; 1\n```" in out
    assert render_markdown("# Head", "slack_mrkdwn") == "*Head*"
    assert render_markdown("> q", "slack_mrkdwn") == "> q"


def test_passthrough_dialects():
    md = "**b** <x> ```\n"
    assert render_markdown(md, "discord") == md
    assert render_markdown(md, "markdown") == md


def test_plain_strips_markup():
    out = render_markdown(
        "# Title\n\n**bold** _it_ `code` [site](https://a.b)\n\n- x\n- y\n\n```\nraw *code*\n```", "plain"
    )
    assert out == "Title\n\nbold it code site (https://a.b)\n\n• x\n• y\n\n```\nraw *code*\n```"


@pytest.mark.parametrize("raw", ["``", "a ``` b", "````x"])
def test_plain_keeps_a_fence_the_code_cannot_close(raw):
    # On a one-line chat (Twitch) the fences are the only sign of where code starts and ends.
    longest = max(len(run) for run in re.findall(r"`+", raw))
    fence = "`" * max(3, longest + 1)
    assert (
        render_markdown(f"intro\n\n{fence}\n{raw}\n{fence}\n\noutro", "plain")
        == f"intro\n\n{fence}\n{raw}\n{fence}\n\noutro"
    )


def slack_blocks(text: str) -> list[str]:
    """Code blocks as Slack reads them: from a ``` to the next ```, the line breaks next to the fences not shown."""
    return [m.removeprefix("\n").removesuffix("\n") for m in re.findall(r"```(.*?)```", text, re.S)]


@pytest.mark.parametrize("code", ["`id`", "``\nrm -rf /\n``", "`ls", "ls`", "``ls", "ls``", "`", "``"])
def test_slack_code_starting_or_ending_with_backticks_stays_one_block(code):
    out = render_markdown(f"run:\n\n```\n{code}\n```\n\nok?", "slack_mrkdwn")
    assert slack_blocks(out) == [code], out
    assert out.startswith("run:\n\n```") and out.endswith("```\n\nok?")


def test_plain_autolink_not_doubled():
    assert render_markdown("<https://a.b>", "plain") == "https://a.b"


def test_unknown_style_passes_through():
    assert render_markdown("**x**", "weird") == "**x**"
