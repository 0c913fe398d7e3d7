"""Regenerate docs/images/web-chat.png, the README's picture of the web chat.

The real agent (App, configured like `operator-use run`, web channel only) answers through the fake
OpenAI server of the tests, and Debian's Chromium, driven by playwright, sends one message and
photographs the rendered reply. Not run by the test suite. From the repository root:

    .venv/bin/python docs/images/make_screenshot.py

Needs the `web` and `dev` extras (aiohttp, playwright) and the `chromium` package.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images" / "web-chat.png"
VIEWPORT = {"width": 1000, "height": 700}
TOKEN = "screenshot-token-0123456789"

QUESTION = "How do I count the lines of every Python file in a folder?"
ANSWER = (
    "Here is a **short script** that walks the folder and counts lines per file:\n\n"
    "```python\n"
    "from pathlib import Path\n"
    "\n"
    "def count_lines(folder: str) -> dict[str, int]:\n"
    "    counts = {}\n"
    '    for path in sorted(Path(folder).rglob("*.py")):\n'
    '        with path.open(encoding="utf-8") as f:\n'
    "            counts[str(path)] = sum(1 for _ in f)\n"
    "    return counts\n"
    "```\n\n"
    "Run it with `count_lines(\".\")`. For a one-off in the shell, `wc -l $(find . -name '*.py')` "
    "gives the same numbers plus a total.\n\n"
    "- `rglob` also looks in subfolders\n"
    '- files are read as UTF-8; pass `errors="replace"` for stray bytes'
)


async def main() -> None:
    sys.path.insert(0, str(ROOT))
    home = Path(tempfile.mkdtemp(prefix="operator-use-shot-"))
    os.environ["OPERATOR_HOME"] = str(home)  # no config.yaml of yours is read, nothing of yours is touched
    try:
        await shoot(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def shoot(home: Path) -> None:
    from playwright.async_api import async_playwright

    from operator_use.app import App
    from operator_use.channels.web.channel import WebChannel
    from operator_use.channels.web.config import WebConfig
    from tests.fakes.llm_server import FakeLLMServer, Reply

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    reply = Reply(text=ANSWER, chunk_size=12, delay_per_chunk=0.005)
    async with FakeLLMServer([reply]) as server:
        config = {
            "home": home,
            "llm": {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "api_key": "fake",
                "base_url": server.openai_base_url,
            },
            "channels": {"cli": {"enabled": False}},
        }
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        web = WebChannel(WebConfig(port=0, token=TOKEN), announce=listening.set_result)
        async with App.from_config(config, channels=[web]), async_playwright() as pw:
            url = await asyncio.wait_for(listening, 30)
            browser = await pw.chromium.launch(
                executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server"]
            )
            try:
                page = await browser.new_page(viewport=VIEWPORT)
                await page.goto(url)
                await page.wait_for_selector("#status[data-state=ok]")
                await page.fill("#input", QUESTION)
                await page.press("#input", "Enter")
                await page.wait_for_selector(".msg.assistant.done", timeout=30_000)
                await page.wait_for_selector(".msg.assistant pre code.language-python")
                OUT.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(OUT))
            finally:
                await browser.close()
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    asyncio.run(main())
