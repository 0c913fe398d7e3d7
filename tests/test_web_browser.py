"""The web chat in a real headless Chromium (Debian's `chromium`, driven by playwright-python).

Open the printed address, send a message, watch the reply stream in, reload and see the history, a
second tab, and a wrong token refused. Screenshots are saved to artifacts/web-chat.png (the finished reply)
and artifacts/web-chat-streaming.png (mid-reply); artifacts/ is gitignored.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .fakes.llm_server import FakeLLMServer, Reply
from .support.deps import require_binary, require_module
from .support.pipeline import Gates
from .support.web import CHROMIUM_ARGS, web_app

ROOT = Path(__file__).resolve().parent.parent

FIRST = "Let me look at the workspace first."
SECOND = "Found **two** things worth showing."
FINAL = (
    "Here is the summary, streamed in small pieces:\n\n"
    '```python\ndef greet(name):\n    return f"Hello, {name}!"\n```\n\n'
    "| tool | result |\n|---|---|\n| gate | open |\n\n"
    "[a link](https://example.com/docs) and [a trap](javascript:document.title='pwned')\n\n"
    "<script>document.title='pwned'</script>\n\n"
    "The model's text is untrusted: <img src=x onerror=\"document.title='pwned'\"> stays text."
)

# Every distinct text the (first) agent message shows, recorded by the page itself as the DOM changes.
RECORD_STATES = """() => {
  window.__states = [];
  const record = () => {
    const body = document.querySelector('.msg.assistant .body');
    const text = body ? body.textContent : null;
    if (text && window.__states[window.__states.length - 1] !== text) window.__states.push(text);
  };
  new MutationObserver(record).observe(document.getElementById('log'),
                                       {subtree: true, childList: true, characterData: true});
}"""


def agent_text_contains(fragment: str) -> str:
    return (
        "() => { const b = document.querySelector('.msg.assistant .body');"
        f" return !!b && b.textContent.includes({fragment!r}); }}"
    )


@pytest.mark.slow
async def test_web_chat_in_headless_chromium(home: Path, tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    require_module("playwright")
    from playwright.async_api import async_playwright

    gates = Gates()  # two tool calls hold the reply twice: two partial states the test can wait for
    script = [
        Reply(text=FIRST, tool_calls=[{"name": "gate", "arguments": {"name": "one"}}]),
        Reply(text=SECOND, tool_calls=[{"name": "gate", "arguments": {"name": "two"}}]),
        Reply(text=FINAL, chunk_size=4, delay_per_chunk=0.01),
    ]
    async with (
        FakeLLMServer(script) as server,
        web_app(home, server, tools=[gates.tool()]) as (_, channel),
        async_playwright() as pw,
    ):
        base = f"http://127.0.0.1:{channel.port}"
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 960, "height": 820})
            page = await context.new_page()
            response = await page.goto(channel.url)
            assert response is not None and response.ok
            assert page.url == base + "/"  # the token was traded for a cookie and left the address bar
            await page.wait_for_selector("#status[data-state=ok]")
            await page.evaluate(RECORD_STATES)

            await page.fill("#input", "What is in my workspace?")
            await page.press("#input", "Enter")
            await page.wait_for_selector(".msg.user >> text=What is in my workspace?")
            assert await page.input_value("#input") == ""

            await gates.wait_entered("one")
            await page.wait_for_function(agent_text_contains(FIRST))
            gates.release["one"].set()
            await gates.wait_entered("two")
            await page.wait_for_function(agent_text_contains("Found two things"))
            shots = ROOT / "artifacts"
            shots.mkdir(exist_ok=True)
            await page.screenshot(path=str(shots / "web-chat-streaming.png"))  # mid-reply, tool call running
            gates.release["two"].set()
            await page.wait_for_selector(".msg.assistant.done")

            final_text = await page.eval_on_selector(".msg.assistant .body", "b => b.textContent")
            states: list[str] = await page.evaluate("window.__states")
            partial = states[:-1]
            assert states[-1] == final_text and "stays text" in final_text
            assert len(partial) >= 2 and len(set(partial)) == len(partial)
            # (Not strictly growing: a half-received table shows its pipes until the table is complete.)
            assert all(len(s) < len(final_text) for s in partial)
            assert FIRST in partial[0] and "Found" not in partial[0]
            assert any("Found two things" in s and "summary" not in s for s in partial)

            # Markdown and code rendered; the model's HTML shown as text, never run.
            assert await page.locator(".msg.assistant strong", has_text="two").count() == 1
            assert await page.locator(".msg.assistant pre code.language-python").count() == 1
            assert await page.locator(".msg.assistant table td", has_text="open").count() == 1
            assert await page.locator(".msg.assistant img, .msg.assistant script").count() == 0
            assert await page.locator(".msg.assistant a[href='https://example.com/docs']").count() == 1
            assert await page.locator(".msg.assistant a[href^='javascript']").count() == 0
            assert "<script>document.title='pwned'</script>" in final_text
            assert await page.title() != "pwned"

            await page.screenshot(path=str(shots / "web-chat.png"))
            shutil.copy(shots / "web-chat.png", tmp_path / "web-chat.png")

            # Reload: the conversation comes back from the session history.
            await page.reload()
            await page.wait_for_selector("#status[data-state=ok]")
            await page.wait_for_selector(".msg.assistant.done")
            assert await page.locator(".msg.user").all_text_contents() == ["What is in my workspace?"]
            # One message, as it was shown live (the turn's text around its tool calls).
            assert await page.locator(".msg.assistant .body").all_text_contents() == [final_text]
            assert await page.locator(".msg.assistant pre code.language-python").count() == 1

            # A second tab of the same browser is the same conversation and gets the same events.
            tab2 = await context.new_page()
            await tab2.goto(base + "/")
            await tab2.wait_for_selector(".msg.assistant.done")
            await tab2.fill("#input", "/help")
            await tab2.press("#input", "Enter")
            for p in (page, tab2):
                await p.wait_for_selector(".msg.assistant.done >> text=/new")

            # Another browser without the token: refused, with the wrong one too.
            stranger = await browser.new_context()
            other = await stranger.new_page()
            refused = await other.goto(base + "/")
            assert refused is not None and refused.status == 401
            wrong = await other.goto(base + "/?token=not-the-token")
            assert wrong is not None and wrong.status == 403
            assert "Wrong token" in await other.content()
        finally:
            await browser.close()
