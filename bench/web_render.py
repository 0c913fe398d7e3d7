"""Web chat render bench: how long the page spends per update while a 100 KB reply streams in.

The real pipeline (fake OpenAI server -> agent -> gateway -> web channel) streams a ~100 KB markdown reply
(headings, paragraphs, lists, tables, quotes, fenced code) to the page in headless Chromium, which times
every OperatorRender.update with performance.now (the channel splits the reply into messages of at most
32,000 characters; the gateway edits each about every 0.1 s). Wall-clock times in a page swing with the
machine's load, so the texts the messages received are then replayed REPS times in the page through the
renderer, and REPS times through the previous one (the whole markdown re-rendered at every edit), and the
quietest repetition of each (lowest p95) is reported. Last, the whole reply is fed to ONE message body in
500-character deltas, new renderer and old: the worst case of one bubble.

Target: p95 and max under 16 ms (one frame). Prints a table, then, as the very last line, one JSON object
with the replayed stream's figures for the new renderer.

    .venv/bin/python bench/web_render.py
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.support.web_render import (
    REPLAY,
    TIME_ONE_BUBBLE,
    chat_page,
    long_reply,
    percentile,
    stream_timed,
)

REPLY_KB = 100
STEP = 500  # characters per update in the one-bubble run
REPS = 5


def figures(times: list[float]) -> tuple[float, float, float]:
    return percentile(times, 0.5), percentile(times, 0.95), max(times)


def quietest(runs: list[list[float]]) -> list[float]:
    return min(runs, key=lambda times: percentile(times, 0.95))


def row(label: str, times: list[float]) -> str:
    p50, p95, top = figures(times)
    return f"{label:<42} {len(times):>7} {p50:>8.2f} {p95:>8.2f} {top:>8.2f}"


async def main() -> dict[str, float]:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is needed (Debian's chromium package)")
    logging.basicConfig(level=logging.WARNING)
    reply = long_reply(REPLY_KB)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        script = [Reply(text=reply, chunk_size=64, delay_per_chunk=0.001)]
        async with FakeLLMServer(script) as server, chat_page(home, server, chromium) as (page, _):
            await stream_timed(page, reply, timeout=120_000)
            live: list[float] = await page.evaluate("window.__renders")
            messages: int = await page.evaluate("window.__texts.size")
            new = [await page.evaluate(REPLAY, False) for _ in range(REPS)]
            old = [await page.evaluate(REPLAY, True) for _ in range(REPS)]
            one_new = [await page.evaluate(TIME_ONE_BUBBLE, [reply, STEP, False]) for _ in range(REPS)]
            one_old = [await page.evaluate(TIME_ONE_BUBBLE, [reply, STEP, True]) for _ in range(REPS)]
    print(f"reply: {len(reply)} characters, streamed as {messages} messages; one-bubble step {STEP} characters")
    print(f"{'per update, ms':<42} {'updates':>7} {'p50':>8} {'p95':>8} {'max':>8}")
    print(row("streamed live (machine load included)", live))
    streamed = quietest(new)
    print(row(f"streamed, replayed (quietest of {REPS})", streamed))
    print(row(f"  previous renderer (quietest of {REPS})", quietest(old)))
    print(row(f"one bubble (quietest of {REPS})", quietest(one_new)))
    print(row(f"  previous renderer (quietest of {REPS})", quietest(one_old)))
    p50, p95, top = figures(streamed)
    return {
        "render_p50_ms": round(p50, 2),
        "render_p95_ms": round(p95, 2),
        "render_max_ms": round(top, 2),
        "reply_kb": REPLY_KB,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
