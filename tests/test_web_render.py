"""The web chat's rendering (static/render.js) in a real headless Chromium against the fake OpenAI server.

Incremental rendering gives the same DOM as a one-shot render (tricky inputs fed in many delta sizes), code
blocks are highlighted and copyable (clipboard API and the fallback), bare URLs become links, the empty page
shows the model, phones get a short placeholder, dark-mode links meet WCAG AA, the favicon is served, and a
streamed 100 KB reply renders whole (its per-update render time is printed, never asserted: bench/web_render.py
measures it). Screenshots go to artifacts/web-render-*.png (gitignored).
"""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import pytest

from .fakes.llm_server import FakeLLMServer, Reply
from .support.deps import require_binary, require_module
from .support.web import TOKEN
from .support.web_render import chat_page, long_reply, percentile, stream_timed

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"

TRICKY = {
    "fences": (
        "Before\n\n```python\ndef f():\n\n    return 1\n```\n\nBetween\n\n~~~\nraw\n\n```\nstill raw\n~~~\n\n"
        "````md\n```js\ninner\n```\n\nlater\n````\n\nAfter `x` and\n\n```\nnever closed\n\nat the end\n"
    ),
    "lists": (
        "- one\n- two\n\n- three (the list goes on: loose)\n\n  continued paragraph\n\n"
        "  ```\n  code in the item\n\n  still\n  ```\n\nA paragraph ends it.\n\n"
        "1. first\n\n2. second\n   - nested\n\n   - nested loose\n\n10) other\n\n* star\n\n+ plus\n\n"
        "3. starts at three\n\n\n\nend\n"
    ),
    "tables": (
        "| a | b |\n|---|:-:|\n| 1 | 2 |\n| 3 | 4 |\n\nText\n| not | a table |\n\n"
        "| x |\n|---|\n| y |\nlazy row\n\nDone\n"
    ),
    "quotes": (
        "> quote\n> > nested\n> > more\n>\n> back\n\n> second quote\nlazy line\n\n> > > deep\n\n"
        "> ```\n> fenced in a quote\n>\n> ```\n\nend\n"
    ),
    "references": "See [the docs][d] and [x].\n\nMore text.\n\n[d]: https://example.com/docs\n[x]: /x 'X'\n",
    "outdented fence in a list": (
        "1. Install:\n   ```bash\n   pip install x\n\nnot in the fence\n   ```\n\nafter\n\n```\nreal\n```\n"
    ),
    "fence closer left of a list's fence": "3) item\n   ```\n\n````\n\n\ntext\n\n````\n\nafter\n",
    "indented code": "para\n\n    code line\n\n    more code\n\nnext\n\n   three spaces\n\n\tTab\n",
    "headings and rules": "Title\n=====\n\n---\n\nSub\n---\n\n* * *\n\n# H1\n\n***bold italic***\n",
    "links": (
        "Bare https://example.com/a?b=c and www.example.org, main.py, README.md, mail me@example.com.\n\n"
        "[trap](javascript:alert(1)) <https://example.com/auto> <script>alert(1)</script>\n"
    ),
    "crlf and breaks": "line one\r\nline two\r\n\r\n- a\r\n- b\r\n\r\ndone\r\n",
    "odd line ends and spaces": (
        "a\n\u00a0\nb continues the paragraph\n\n```js\u2028x\n\ncode\n\nmore\n``` \u00a0\n\nstill code\n"
        "```\n\nout\r\rlone cr\r\r```\rcode\r\rin\r```\r\rafter\n"
    ),
    "long": long_reply(8, seed=3),
}

# In the page: feed `text` in `step`-character deltas (step 0: at every line end and every 7 characters)
# through OperatorRender.update; after each update the DOM must equal a one-shot render of that prefix
# (highlighting aside: finished blocks are highlighted early), and the final DOM must equal the one-shot
# final render exactly. Returns the mismatches (empty when all is well).
COMPARE = """([text, step]) => {
  const R = window.OperatorRender;
  const make = () => { const b = document.createElement("div"); b.className = "body"; return b; };
  const plainCode = (html) => {
    const box = document.createElement("div");
    box.innerHTML = html;
    for (const code of box.querySelectorAll("code.hljs")) {
      code.textContent = code.textContent;
      code.classList.remove("hljs");
      if (!code.className) code.removeAttribute("class");
    }
    return box.innerHTML;
  };
  const ends = [];
  if (step) { for (let e = step; e < text.length; e += step) ends.push(e); }
  else { for (let e = 1; e < text.length; e++) if (text[e - 1] === "\\n" || e % 7 === 0) ends.push(e); }
  const live = make();
  const bad = [];
  for (const e of ends) {
    const part = text.slice(0, e);
    R.update(live, part, false);
    const whole = make();
    R.renderAll(whole, part, false);
    if (plainCode(live.innerHTML) !== plainCode(whole.innerHTML)) {
      bad.push({ at: e, live: live.innerHTML, whole: whole.innerHTML });
    }
    if (bad.length > 3) break;
  }
  R.update(live, text, true);
  const whole = make();
  R.renderAll(whole, text, true);
  if (live.innerHTML !== whole.innerHTML) bad.push({ at: "final", live: live.innerHTML, whole: whole.innerHTML });
  return bad;
}"""


# Pieces a model's markdown is made of, including the awkward ones: mixed at random (seeded) into documents.
PIECES = [
    "para text",
    "- item",
    "  indented continuation",
    "    four-space code",
    "1. ordered",
    "3) other ordered",
    "* star item",
    "```",
    "```python",
    "````",
    "~~~",
    "   ```",
    "  ```sh",
    "> quote",
    "> > nested",
    ">",
    "| a | b |",
    "|---|---|",
    "# heading",
    "===",
    "---",
    "\u00a0",
    "   ",
    "\t tab",
    "https://example.com/x",
    "`code` and **bold",
    "[ref]",
    "[ref]: https://example.com/ref",
    "  - nested item",
    "10. ten",
    "    ```",
    "- ```",
    "``` not`a fence",
    " ~~~~",
    "  > indented quote",
    "***",
]


def _random_documents(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        lines = [rng.choice(PIECES) for _ in range(rng.randint(8, 30))]
        docs.append("".join(line + rng.choice(["\n", "\n", "\n\n", "\n\n\n"]) for line in lines))
    return docs


def _browser() -> str:
    chromium = require_binary("chromium")
    require_module("playwright")
    return chromium


async def _reply(page, text: str) -> None:  # type: ignore[no-untyped-def]
    await page.fill("#input", "go")
    await page.press("#input", "Enter")
    await page.wait_for_selector(".msg.assistant.done")


@pytest.mark.slow
async def test_incremental_render_equals_a_one_shot_render(home: Path) -> None:
    chromium = _browser()
    async with FakeLLMServer([]) as server, chat_page(home, server, chromium) as (page, _):
        for name, text in TRICKY.items():
            for step in (0, 1, 5, 64) if len(text) < 2000 else (0, 97):
                bad = await page.evaluate(COMPARE, [text, step])
                assert bad == [], f"{name} (step {step}): {bad[0]}"
        for n, text in enumerate(_random_documents(150, seed=11)):
            bad = await page.evaluate(COMPARE, [text, 0])
            assert bad == [], f"random document {n} {text!r}: {bad[0]}"
        # An edit that is not an append (the line that made a cut safe changed): rendered anew, still right.
        for before, after in [
            ("- a\n\nb\nmore", "- a\n\n- b\n"),
            ("```\nx\n```\n\ntext\n\nnext\n", "```\nx\n```\n\n    indented\n"),
            ("one\n\ntwo\n\nthree\n", "one\n"),
        ]:
            same = await page.evaluate(
                """([before, after]) => {
                  const R = window.OperatorRender;
                  const live = document.createElement("div");
                  R.update(live, before, false);
                  R.update(live, after, true);
                  const whole = document.createElement("div");
                  R.renderAll(whole, after, true);
                  return live.innerHTML === whole.innerHTML;
                }""",
                [before, after],
            )
            assert same, (before, after)
        # The fast path is taken where it is safe, and refused where it is not.
        cut = "(text) => window.OperatorRender.lastCut(text)"
        assert await page.evaluate(cut, TRICKY["long"]) > 0
        assert await page.evaluate(cut, "a\n\nb\n") == 3
        assert await page.evaluate(cut, "a\n\nb") == 0  # "b" may yet become "b. item" or the like
        assert await page.evaluate(cut, "- a\n\n- b\n") == 0
        assert await page.evaluate(cut, "- a\n\n  b\n") == 0
        assert await page.evaluate(cut, "```\na\n\nb\n") == 0


@pytest.mark.slow
async def test_code_is_highlighted_and_its_copy_button_copies_it(home: Path) -> None:
    chromium = _browser()
    code = 'def greet(name):\n    # say hello\n    return f"Hello, {name}!"'
    reply = f"Here:\n\n```python\n{code}\n```\n\nAnd plain:\n\n```\nno language\n```\n"
    async with (
        FakeLLMServer([Reply(text=reply, chunk_size=5)]) as server,
        chat_page(home, server, chromium, permissions=["clipboard-read", "clipboard-write"]) as (page, _),
    ):
        problems: list[str] = []  # script errors and CSP refusals (the fallback styles its textarea)
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        await _reply(page, reply)
        python = page.locator(".msg.assistant .codebox code.language-python")
        assert await python.get_attribute("class") == "language-python hljs"
        assert await python.locator("span.hljs-keyword", has_text="def").count() == 1
        assert await python.locator("span.hljs-string").count() >= 1
        assert await python.locator("span.hljs-comment", has_text="say hello").count() == 1
        assert await python.text_content() == code + "\n"  # highlighting changed no character
        assert await page.locator(".msg.assistant .codebox button.copy").count() == 2
        # The button's label is CSS: the message's text does not contain it.
        body_text = await page.locator(".msg.assistant .body").text_content()
        assert body_text is not None and "Copy" not in body_text

        button = page.locator(".msg.assistant .codebox").first.locator("button.copy")
        await button.click()
        await page.wait_for_selector(".codebox button.copy[data-state=copied]")
        assert await page.evaluate("navigator.clipboard.readText()") == code

        # Without the clipboard API (plain http from another machine): the textarea + execCommand fallback.
        await page.evaluate("""() => {
          Object.defineProperty(Navigator.prototype, "clipboard", { get: () => undefined, configurable: true });
          window.__copied = null;
          document.addEventListener("copy", (e) => {
            const t = e.target;
            window.__copied = t.value.slice(t.selectionStart, t.selectionEnd);
          });
        }""")
        second = page.locator(".msg.assistant .codebox").nth(1).locator("button.copy")
        await second.click()
        await page.wait_for_function("() => document.querySelectorAll('.codebox button.copy')[1].dataset.state")
        assert await second.get_attribute("data-state") == "copied"
        assert await page.evaluate("window.__copied") == "no language"
        assert problems == []
        assert await page.locator(".msg.assistant .codebox code:not(.language-python)").get_attribute("class") is None


@pytest.mark.slow
async def test_bare_urls_become_safe_links(home: Path) -> None:
    chromium = _browser()
    # Bare http(s) URLs only: not scheme-relative, ftp: or mailto: ones; explicit links work as they did.
    others = (
        "Not these: //evil.example/x ftp://files.example/y mailto:me@example.com, but http://plain.example/z.\n\n"
        "[explicit](https://example.com/e) [mail](mailto:me@example.com) <mailto:you@example.com>\n"
    )
    reply = TRICKY["links"] + "\n" + others
    async with FakeLLMServer([Reply(text=reply)]) as server, chat_page(home, server, chromium) as (page, _):
        await _reply(page, reply)
        links = await page.eval_on_selector_all(
            ".msg.assistant a", "as => as.map(a => [a.getAttribute('href'), a.target, a.rel, a.textContent])"
        )
        assert links == [
            ["https://example.com/a?b=c", "_blank", "noopener noreferrer", "https://example.com/a?b=c"],
            ["https://example.com/auto", "_blank", "noopener noreferrer", "https://example.com/auto"],
            ["http://plain.example/z", "_blank", "noopener noreferrer", "http://plain.example/z"],
            ["https://example.com/e", "_blank", "noopener noreferrer", "explicit"],
            ["mailto:me@example.com", "_blank", "noopener noreferrer", "mail"],
            ["mailto:you@example.com", "_blank", "noopener noreferrer", "mailto:you@example.com"],
        ]
        text = await page.locator(".msg.assistant .body").text_content()
        assert text is not None and "Not these: //evil.example/x ftp://files.example/y mailto:me@example.com," in text
        # Only links with a scheme: a file name such as main.py (.py: Paraguay) or README.md stays text.
        assert "www.example.org, main.py, README.md, mail me@example.com." in text
        assert "[trap](javascript:alert(1))" in text and "<script>" in text
        assert await page.locator(".msg.assistant script").count() == 0


@pytest.mark.slow
async def test_empty_state_shows_the_model_and_phones_get_a_short_placeholder(home: Path) -> None:
    chromium = _browser()
    empty = "() => getComputedStyle(document.getElementById('log'), '::before').content"
    async with FakeLLMServer([Reply(text="Hello **there**.")]) as server:
        async with chat_page(home, server, chromium, width=375, height=740) as (page, _):
            model = await page.evaluate("document.documentElement.dataset.model")
            assert model  # the hello event's label of the model
            await page.wait_for_function(f"() => ({empty})().includes({model!r})")
            placeholder = await page.get_attribute("#input", "placeholder")
            assert placeholder is not None and len(placeholder) <= 12
            # The whole placeholder fits the box: nothing of it is cut off.
            fits = await page.evaluate("""() => {
              const i = document.getElementById("input");
              const c = document.createElement("canvas").getContext("2d");
              c.font = getComputedStyle(i).font;
              return c.measureText(i.placeholder).width < i.clientWidth - 20;
            }""")
            assert fits
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "web-render-empty-phone.png"))
            await _reply(page, "")
            assert await page.evaluate(empty) == "none"  # gone once the conversation has messages
        async with chat_page(home, server, chromium) as (page, _):
            assert len(await page.get_attribute("#input", "placeholder") or "") > 30


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _rgb(css: str) -> tuple[float, ...]:
    inside = css[css.index("(") + 1 : css.index(")")].replace("/", " ").replace(",", " ").split()
    values = tuple(float(v) for v in inside)
    assert len(values) == 3 or values[3] == 1, f"not opaque: {css}"
    return values[:3]


def contrast(fg: str, bg: str) -> float:
    a, b = sorted((_luminance(_rgb(fg)), _luminance(_rgb(bg))), reverse=True)
    return (a + 0.05) / (b + 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("dark", [True, False], ids=["dark", "light"])
async def test_link_colour_contrast_meets_wcag_aa(home: Path, dark: bool) -> None:
    chromium = _browser()
    reply = "Read [the docs](https://example.com/docs) or https://example.com/raw."
    async with FakeLLMServer([Reply(text=reply)]) as server, chat_page(home, server, chromium, dark=dark) as (page, _):
        await _reply(page, reply)
        assert await page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") is dark
        colours = await page.eval_on_selector_all(
            ".msg.assistant .body a",
            "as => as.map(a => [getComputedStyle(a).color, getComputedStyle(a.closest('.body')).backgroundColor])",
        )
        assert len(colours) == 2
        for fg, bg in colours:
            ratio = contrast(fg, bg)
            print(f"{'dark' if dark else 'light'} link {fg} on {bg}: {ratio:.2f}:1")
            assert ratio >= 4.5


@pytest.mark.slow
async def test_favicon_and_render_assets_are_served(home: Path) -> None:
    chromium = _browser()
    async with FakeLLMServer([]) as server, chat_page(home, server, chromium) as (page, channel):
        assert await page.get_attribute("link[rel=icon]", "href") == "/static/favicon.svg"
        assert await page.evaluate("typeof window.hljs.highlight") == "function"
        assert await page.evaluate("typeof window.OperatorRender.update") == "function"
        base = f"http://127.0.0.1:{channel.port}/static/"
        expected = {
            "favicon.svg": "image/svg+xml",
            "render.js": "text/javascript",
            "render.css": "text/css",
            "highlight.min.js": "text/javascript",
            "highlight.LICENSE.txt": "text/plain",
        }
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            for name, kind in expected.items():
                async with session.get(base + name) as response:
                    assert response.status == 200, name
                    assert response.content_type == kind, name
                    body = await response.read()
                    assert body == (ROOT / "operator_use/channels/web/static" / name).read_bytes()
            async with aiohttp.ClientSession() as stranger, stranger.get(base + "favicon.svg") as response:
                assert response.status == 401  # behind the token like every asset


@pytest.mark.slow
async def test_a_streamed_100kb_reply_renders_whole(home: Path) -> None:
    """The 100 KB reply streams through the real pipeline; each message's final DOM equals a one-shot render
    of its text. The per-update render time is printed for the record (bench/web_render.py reports it)."""
    chromium = _browser()
    reply = long_reply(100)
    async with (
        FakeLLMServer([Reply(text=reply, chunk_size=64, delay_per_chunk=0.001)]) as server,
        chat_page(home, server, chromium) as (page, _),
    ):
        await stream_timed(page, reply)  # done: the last message rendered final, ending as the reply ends
        same = await page.evaluate("""() => Array.from(document.querySelectorAll('.msg.assistant .body')).map((b) => {
          const seen = window.__texts.get(b.dataset.benchId);
          const text = seen[seen.length - 1][0];
          const whole = document.createElement("div");
          whole.className = "body";
          window.OperatorRender.renderAll(whole, text, true);
          return [seen[seen.length - 1][1], b.innerHTML === whole.innerHTML, text.length];
        })""")
        assert all(final and equal for final, equal, _ in same), same
        assert sum(n for _, _, n in same) >= len(reply.strip()) - 10 * len(same)  # split into messages, whole
        times: list[float] = await page.evaluate("window.__renders")
        print(
            f"\n{len(times)} updates of a {len(reply) / 1000:.0f} KB reply in {len(same)} messages: "
            f"p50 {percentile(times, 0.5):.2f} ms, p95 {percentile(times, 0.95):.2f} ms, max {max(times):.2f} ms"
        )
        assert await page.locator(".msg.assistant code.hljs").count() > 10


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "width", "height", "dark"),
    [
        ("desktop-light", 960, 820, False),
        ("desktop-dark", 960, 820, True),
        ("phone-light", 375, 740, False),
        ("phone-dark", 375, 740, True),
    ],
)
async def test_screenshots_of_a_reply_with_code(home: Path, label: str, width: int, height: int, dark: bool) -> None:
    chromium = _browser()
    reply = (
        "Here is the fix, see https://docs.python.org/3/library/asyncio.html for details:\n\n"
        "```python\nimport asyncio\n\nasync def main(urls: list[str]) -> None:\n"
        "    # fetch every page at once\n    results = await asyncio.gather(*(fetch(u) for u in urls))\n"
        '    print(f"{len(results)} pages")\n```\n\n'
        "1. Save it as `main.py`.\n2. Run `python main.py`.\n\n> Note: the **event loop** must not block.\n\n"
        "| step | time |\n|---|---:|\n| fetch | 1.2 s |\n| parse | 0.1 s |\n"
    )
    async with (
        FakeLLMServer([Reply(text=reply)]) as server,
        chat_page(home, server, chromium, width=width, height=height, dark=dark) as (page, _),
    ):
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / f"web-render-empty-{label}.png"))
        await _reply(page, reply)
        assert await page.locator(".msg.assistant code.hljs").count() == 1
        await page.screenshot(path=str(ARTIFACTS / f"web-render-{label}.png"))
