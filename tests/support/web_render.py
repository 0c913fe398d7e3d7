"""Shared by tests/test_web_render.py and bench/web_render.py: a long markdown reply, the page-side
instrumentation of the renderer, and the web chat opened in headless Chromium."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..fakes.llm_server import FakeLLMServer
from .web import CHROMIUM_ARGS, web_app

_WORDS = [
    "agent",
    "tool",
    "shell",
    "workspace",
    "reply",
    "token",
    "stream",
    "model",
    "session",
    "gateway",
    "channel",
    "render",
    "block",
    "list",
    "code",
    "table",
    "quote",
    "link",
    "file",
    "process",
    "config",
    "voice",
    "page",
    "socket",
    "frame",
    "limit",
    "error",
    "test",
    "bench",
]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
    words[0] = words[0].capitalize()
    if rng.random() < 0.2:
        words.insert(rng.randint(1, len(words) - 1), "**" + rng.choice(_WORDS) + "**")
    if rng.random() < 0.2:
        words.insert(rng.randint(1, len(words) - 1), "`" + rng.choice(_WORDS) + "()`")
    if rng.random() < 0.1:
        words.append("see https://example.com/" + rng.choice(_WORDS))
    return " ".join(words) + "."


def long_reply(kb: int = 100, seed: int = 7) -> str:
    """About `kb` KB of markdown as a model writes it: headings, paragraphs, lists (tight, loose, nested),
    fenced code in several languages, tables and quotes."""
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    # (Kept under kb * 1000 characters: the agent cuts a reply off at llm.max_output_chars, 100,000.)
    while sum(len(p) + 2 for p in parts) < kb * 1000 - 2500:
        n += 1
        parts.append(f"## Part {n}: {rng.choice(_WORDS)}")
        parts.append(" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))))
        kind = n % 5
        if kind == 0:
            lines = [f"def step_{n}(x):", '    """Do one thing."""']
            lines += [
                f"    y = x * {i} + {rng.randint(1, 99)}  # {rng.choice(_WORDS)}" for i in range(rng.randint(4, 14))
            ]
            lines += ["", "    return y"]
            parts.append("```python\n" + "\n".join(lines) + "\n```")
        elif kind == 1:
            parts.append("\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(3, 7))))
        elif kind == 2:
            items = [f"{i}. {_sentence(rng)}\n\n   {_sentence(rng)}" for i in range(1, rng.randint(3, 5))]
            parts.append("\n\n".join(items))
        elif kind == 3:
            rows = [f"| {rng.choice(_WORDS)} | {rng.randint(1, 999)} | {rng.choice(_WORDS)} |" for _ in range(6)]
            parts.append("| name | count | note |\n|---|---:|---|\n" + "\n".join(rows))
        else:
            js = [f"const v{i} = await fetch('/api/{rng.choice(_WORDS)}');" for i in range(rng.randint(3, 9))]
            parts.append("```js\n" + "\n".join(js) + "\n```")
            parts.append("> " + _sentence(rng) + "\n>\n> > " + _sentence(rng))
    return "\n\n".join(parts) + "\n"


# Installed in the page before a reply streams: every OperatorRender.update is timed (performance.now around
# the call), and the texts each message body received are kept, to replay them.
TIME_UPDATES = """() => {
  const R = window.OperatorRender;
  const update = R.update;
  window.__update = update;
  window.__renders = [];
  window.__texts = new Map();
  let ids = 0;
  R.update = (body, text, final) => {
    if (!body.dataset.benchId) body.dataset.benchId = String(ids++);
    const t0 = performance.now();
    update(body, text, final);
    window.__renders.push(performance.now() - t0);
    const seen = window.__texts.get(body.dataset.benchId) || [];
    seen.push([text, final]);
    window.__texts.set(body.dataset.benchId, seen);
  };
}"""


async def stream_timed(page: Any, reply: str, timeout: float | None = None) -> None:
    """Ask for the (fake model's) long reply on a chat_page with TIME_UPDATES installed first; back once the
    last message rendered final, ending as `reply` ends. `timeout` in ms (None: Playwright's default)."""
    await page.evaluate(TIME_UPDATES)
    await page.fill("#input", "write a lot")
    await page.press("#input", "Enter")
    await page.wait_for_function(
        """(end) => !document.querySelector('.msg.assistant.streaming') &&
          Array.from(window.__texts.values()).some((seen) => {
            const [text, final] = seen[seen.length - 1];
            return final && text.trimEnd().endsWith(end);
          })""",
        arg=reply.strip()[-100:],
        timeout=timeout,
    )


# The renderer before this one: the whole markdown rendered at every edit.
_OLD = """
  const md = window.markdownit("default", { html: false, linkify: false, typographer: false, breaks: true });
  const old = (body, text) => {
    body.innerHTML = md.render(text);
    for (const a of body.querySelectorAll("a")) { a.target = "_blank"; a.rel = "noopener noreferrer"; }
  };
  const fresh = () => {
    const holder = document.createElement("div");
    holder.className = "msg assistant streaming";
    const body = document.createElement("div");
    body.className = "body";
    holder.appendChild(body);
    document.getElementById("log").appendChild(holder);
    return body;
  };
"""

# Replays the texts the streamed messages received (after TIME_UPDATES) through the new renderer or the old
# one, in fresh message bodies, timing each update the same way; returns the times.
REPLAY = (
    """(useOld) => {"""
    + _OLD
    + """
  const times = [];
  const bodies = [];
  for (const seen of window.__texts.values()) {
    const body = fresh();
    bodies.push(body);
    for (const [text, final] of seen) {
      const t0 = performance.now();
      if (useOld) old(body, text); else window.__update(body, text, final);
      times.push(performance.now() - t0);
    }
  }
  for (const body of bodies) body.parentElement.remove();
  return times;
}"""
)

# Feeds `text` to ONE message body in `step`-character deltas (one update each) and returns the times: the
# whole reply in one bubble, the worst case.
TIME_ONE_BUBBLE = (
    """([text, step, useOld]) => {"""
    + _OLD
    + """
  const body = fresh();
  const times = [];
  for (let end = step; ; end += step) {
    const final = end >= text.length;
    const part = text.slice(0, Math.min(end, text.length));
    const t0 = performance.now();
    if (useOld) old(body, part); else window.OperatorRender.update(body, part, final);
    times.push(performance.now() - t0);
    if (final) break;
  }
  body.parentElement.remove();
  return times;
}"""
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@asynccontextmanager
async def chat_page(
    home: Path,
    server: FakeLLMServer,
    chromium: str,
    *,
    width: int = 960,
    height: int = 820,
    dark: bool = False,
    permissions: list[str] | None = None,
) -> AsyncIterator[tuple[Any, Any]]:
    """The agent with its web channel, and a connected page of it in headless Chromium: (page, channel)."""
    from playwright.async_api import async_playwright

    async with web_app(home, server) as (_, channel), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": width, "height": height},
                color_scheme="dark" if dark else "light",
                permissions=permissions or [],
            )
            page = await context.new_page()
            response = await page.goto(channel.url)
            assert response is not None and response.ok
            await page.wait_for_selector("#status[data-state=ok]")
            yield page, channel
        finally:
            await browser.close()
