"""The web chat's controls in a real headless Chromium (Debian's `chromium`, driven by playwright-python),
against the whole agent and the fake OpenAI server: the token kept in the data home across restarts (the
page reconnects by itself), a stale page told once, Stop, New chat on every tab, buttons under a message
(approval requests: Approve runs the command, Deny refuses it), errors styled as errors, and the mic off
without speech-to-text. Screenshots of each state are saved under /tmp/opu-web-ui/ (they are looked at,
not compared)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from operator_use.app import App
from operator_use.channels.web.channel import WebChannel
from operator_use.channels.web.config import WebConfig
from operator_use.channels.web.server import STALE_TOKEN_CLOSE
from operator_use.channels.web.token import TOKEN_FILE, stored_token
from operator_use.messages import Address, Button, HistoryMessage
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply, echo_responder
from .support.agent_process import agent_env, running_agent
from .support.apps import build_app
from .support.deps import require_binary, require_module
from .support.mqtt import free_port
from .support.web import CHROMIUM_ARGS, open_tab

SHOTS = Path("/tmp/opu-web-ui")
COMMAND = "echo ran > proof.txt && echo shell-ok"

pytestmark = pytest.mark.slow


@asynccontextmanager
async def ui_app(
    home: Path,
    server: FakeLLMServer,
    *,
    stt: bool = False,
    web: dict[str, Any] | None = None,
    agent: dict[str, Any] | None = None,
    history: Any = None,
) -> AsyncIterator[tuple[App, WebChannel]]:
    """The whole agent with only the web channel; without `web["token"]` the token is the stored one."""
    announced: list[str] = []
    channel = WebChannel(WebConfig(**{"port": 0, **(web or {})}), announce=announced.append, history=history)
    voice: dict[str, Any] = {"tts": {"provider": "none"}}
    voice["stt"] = (
        {"provider": "openai", "api_key": "k", "base_url": server.openai_base_url} if stt else {"provider": "none"}
    )
    llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
    app = build_app(home, channel, llm, agent={"tools": [], **(agent or {})}, voice=voice)  # type: ignore[arg-type]
    async with app:
        assert announced == [channel.url]
        yield app, channel


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    executable = require_binary("chromium")
    require_module("playwright")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Any, channel: WebChannel, context: Any = None) -> Any:
    context = context or await browser.new_context(viewport={"width": 900, "height": 640})
    page = await context.new_page()
    response = await page.goto(channel.url)
    assert response is not None and response.ok
    await page.wait_for_selector("#status[data-state=ok]")
    return page


async def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def say(page: Any, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


def last_user_texts(server: FakeLLMServer) -> list[str]:
    """Every user text of the model's latest request (its whole history)."""
    body = server.requests[-1]
    return [FakeRequest("openai", "", body, {}).last_user_text()] + [
        str(m.get("content")) for m in body["messages"] if m.get("role") == "user"
    ]


# --- the token ---------------------------------------------------------------------------------


def test_the_stored_token_is_private_from_the_start_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / TOKEN_FILE
    old = os.umask(0)  # even a process that would create world-writable files
    try:
        token = stored_token(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token and len(token) >= 32
    assert stored_token(path) == token
    assert [p.name for p in path.parent.iterdir()] == [TOKEN_FILE]  # no temporary file left behind
    # Loosened by someone: tightened again, same token.
    path.chmod(0o644)
    assert stored_token(path) == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    # Damaged: replaced by a new one.
    path.write_text("short\n")
    fresh = stored_token(path)
    assert fresh != token and path.read_text().strip() == fresh and stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_configured_token_wins_over_the_stored_one(home: Path) -> None:
    async with FakeLLMServer() as server, ui_app(home, server, web={"token": "configured-token-1"}) as (_, channel):
        assert channel.token == "configured-token-1"
        assert not (home / TOKEN_FILE).exists()


async def test_the_page_reconnects_by_itself_after_a_restart(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder()) as server, chromium() as browser:
        async with ui_app(home, server) as (_, first):
            token_file = home / TOKEN_FILE
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert token_file.read_text().strip() == first.token
            port, token = first.port, first.token
            page = await open_page(browser, first)
            await say(page, "before the restart")
            await page.wait_for_selector(".msg.assistant.done >> text=You said: before the restart")
        # The agent is gone: the page says so and keeps trying.
        await page.wait_for_selector("#status[data-state=bad]")
        await shot(page, "restart-1-disconnected")
        async with ui_app(home, server, web={"port": port}) as (_, second):
            assert second.token == token  # the same token, from the file: the page's cookie is still good
            await page.wait_for_selector("#status[data-state=ok]")
            # The history came back with the reconnection.
            await page.wait_for_selector(".msg.assistant.done >> text=You said: before the restart")
            await say(page, "after the restart")
            await page.wait_for_selector(".msg.assistant.done >> text=You said: after the restart")
            await shot(page, "restart-2-reconnected")
            assert last_user_texts(server)[0] == "after the restart"


# Every state the status line goes through, recorded by the page itself.
RECORD_STATUS = """() => {
  window.__statuses = [];
  new MutationObserver(() => window.__statuses.push(document.getElementById('status').dataset.state))
    .observe(document.getElementById('status'), {attributes: true, attributeFilter: ['data-state']});
}"""


async def test_restart_typed_in_the_page_restarts_the_process_and_the_page_follows(home: Path) -> None:
    port = free_port()
    async with FakeLLMServer(responder=echo_responder()) as server, chromium() as browser:
        env = agent_env(
            home,
            OPERATOR_LLM__PROVIDER="openai",
            OPERATOR_LLM__MODEL="fake-gpt",
            OPERATOR_LLM__API_KEY="k",
            OPERATOR_LLM__BASE_URL=server.openai_base_url,
            OPERATOR_CHANNELS__WEB__ENABLED="true",
            OPERATOR_CHANNELS__WEB__PORT=str(port),
            OPERATOR_VOICE__STT__PROVIDER="none",
        )
        async with running_agent(env) as agent:
            urls = re.findall(r"Web chat: (\S+)", agent.stderr)
            assert len(urls) == 1
            token = (home / TOKEN_FILE).read_text().strip()
            assert urls[0].endswith(f"?token={token}") and stat.S_IMODE((home / TOKEN_FILE).stat().st_mode) == 0o600
            page = await browser.new_page()
            await page.goto(urls[0])
            await page.wait_for_selector("#status[data-state=ok]")
            await page.evaluate(RECORD_STATUS)
            await say(page, "/restart")
            # Down (the process replaced itself), then up again: the page reconnected on its own.
            await page.wait_for_function("() => window.__statuses.includes('bad') && window.__statuses.at(-1) === 'ok'")
            await say(page, "are you back?")
            await page.wait_for_selector(".msg.assistant.done >> text=You said: are you back?")
            assert "Restarting operator-use" in agent.stderr
            # The new process printed the same address: the token came from the file.
            assert re.findall(r"Web chat: (\S+)", agent.stderr) == urls * 2
            await shot(page, "cli-restart")


async def test_a_stale_page_is_told_once_and_stops_retrying(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="operator_use.channels.web")

    def refusals() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "without a valid token" in r.getMessage()]

    async with FakeLLMServer(responder=echo_responder()) as server, chromium() as browser:
        async with ui_app(home, server) as (_, first):
            port = first.port
            page = await open_page(browser, first)
        await page.wait_for_selector("#status[data-state=bad]")
        (home / TOKEN_FILE).unlink()  # the owner deleted the token: the next start makes a new one
        async with ui_app(home, server, web={"port": port}) as (_, second):
            assert (home / TOKEN_FILE).read_text().strip() == second.token
            await page.wait_for_selector("#status[data-state=stale]")
            assert "open the new address" in (await page.get_attribute("#status", "title") or "")
            await page.wait_for_selector(".msg.error >> text=Open the new address")
            await shot(page, "stale-page")
            await page.set_viewport_size({"width": 375, "height": 640})
            await shot(page, "stale-page-phone")
            # The same stale cookie again (another tab, or the page reloaded): told again, logged no more.
            cookie = {f"opu_token_{port}": (await page.context.cookies())[0]["value"]}
            origin = {"Origin": f"http://127.0.0.1:{port}"}
            for _ in range(3):
                async with aiohttp.ClientSession(cookies=cookie, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                    async with http.ws_connect(f"http://127.0.0.1:{port}/ws", headers=origin) as ws:
                        closing = await ws.receive()
                        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == STALE_TOKEN_CLOSE
            assert len(refusals()) == 1, [r.getMessage() for r in refusals()]
            # A program without the page's Origin still gets a plain 401.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with open_tab(second, token="not-the-token"):
                    pass
            assert refused.value.status == 401


# --- the controls ------------------------------------------------------------------------------


async def test_hello_tells_the_model_and_whether_voice_notes_are_understood(home: Path) -> None:
    async with FakeLLMServer() as server:
        async with ui_app(home, server, web={"token": "configured-token-1"}) as (app, channel):
            async with open_tab(channel, token="configured-token-1") as tab:
                hello = await tab.next("history")
                hello = tab.events[0]
                assert hello["type"] == "hello" and hello["stt"] is False
                assert app.llm is not None and hello["model"] == app.llm.label
        async with ui_app(home, server, stt=True, web={"token": "configured-token-1"}) as (_, channel):
            async with open_tab(channel, token="configured-token-1") as tab:
                assert (await tab.next("hello"))["stt"] is True


async def test_the_mic_is_disabled_without_speech_to_text(home: Path) -> None:
    async with FakeLLMServer() as server, chromium() as browser:
        async with ui_app(home, server) as (_, channel):
            page = await open_page(browser, channel)
            await page.wait_for_selector("#mic:disabled")
            assert "speech-to-text" in (await page.get_attribute("#mic", "title") or "")
            assert await page.get_attribute("html", "data-model") == "openai/fake-gpt"
            await page.hover("#mic", force=True)
            await shot(page, "mic-off")
        async with ui_app(home, server, stt=True) as (_, channel):
            page = await open_page(browser, channel)
            assert await page.get_attribute("html", "data-stt") == "on"
            assert await page.is_enabled("#mic")


async def test_stop_cancels_the_running_turn(home: Path) -> None:
    gate = asyncio.Event()
    script = [Reply(text="Thinking about it at length, " + "and more " * 20 + "THE-END", chunk_size=6, gate=gate)]
    async with FakeLLMServer(script, responder=echo_responder()) as server, chromium() as browser:
        async with ui_app(home, server) as (_, channel):
            page = await open_page(browser, channel)
            await say(page, "think hard")
            await page.wait_for_selector(".msg.assistant.streaming")  # the model is mid-reply, held by the gate
            await shot(page, "stop-1-running")
            await page.click("#stop")
            await page.wait_for_selector(".msg.user >> text=/stop")
            await page.wait_for_selector(".msg.assistant >> text=Stopped.")
            gate.set()  # the fake model would go on now: nobody listens any more
            await say(page, "still there?")
            await page.wait_for_selector(".msg.assistant.done >> text=You said: still there?")
            await shot(page, "stop-2-stopped")
            assert "THE-END" not in await page.text_content("#log")
            assert len(server.requests) == 2


async def test_new_chat_clears_every_tab_and_forgets_the_history(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder()) as server, chromium() as browser:
        async with ui_app(home, server) as (_, channel):
            page = await open_page(browser, channel)
            other = await page.context.new_page()  # a second tab of the same conversation
            await other.goto(f"http://127.0.0.1:{channel.port}/")
            await other.wait_for_selector("#status[data-state=ok]")
            await say(page, "remember the word kumquat")
            for tab in (page, other):
                await tab.wait_for_selector(".msg.assistant.done >> text=You said: remember the word kumquat")
            await page.click("#new-chat")
            for tab in (page, other):
                await tab.wait_for_selector(".msg.assistant >> text=Started a new conversation")
                assert "kumquat" not in await tab.text_content("#log")
            await shot(other, "new-chat-other-tab")
            await say(other, "which word?")
            await page.wait_for_selector(".msg.assistant.done >> text=You said: which word?")
            sent = [m for m in server.requests[-1]["messages"] if m.get("role") in ("user", "assistant")]
            assert [m["content"] for m in sent] == ["which word?"]
            # A reload shows the fresh conversation only.
            await page.reload()
            await page.wait_for_selector(".msg.assistant.done >> text=You said: which word?")
            assert "kumquat" not in await page.text_content("#log")


def shell_responder(request: FakeRequest) -> Reply:
    result = request.last_tool_result()
    if result is not None:
        return Reply(text=f"result: {result}")
    return Reply(tool_calls=[{"name": "run_shell", "arguments": {"command": COMMAND}}])


async def test_approval_buttons_approve_and_deny(home: Path) -> None:
    proof = home / "workspace" / "proof.txt"
    async with FakeLLMServer(responder=shell_responder) as server, chromium() as browser:
        async with ui_app(home, server, agent={"tools": ["run_shell"]}) as (_, channel):
            page = await open_page(browser, channel)
            await say(page, "build it")
            request = page.locator(".msg.assistant", has=page.locator(".buttons")).last
            await request.wait_for()
            assert COMMAND in await request.text_content()
            labels = [t.lower() for t in await request.locator(".buttons button").all_text_contents()]
            assert any("approve" in t for t in labels) and any("deny" in t for t in labels), labels
            await shot(page, "approval-1-request")
            assert not proof.exists()
            await request.locator("button.action.primary").click()
            assert await request.locator("button:disabled").count() == len(labels)
            await page.wait_for_selector(".msg.assistant.done >> text=result: shell-ok")
            assert proof.read_text() == "ran\n"
            await shot(page, "approval-2-approved")

            proof.unlink()
            await say(page, "build it again")
            await page.locator(".msg.assistant .buttons").nth(1).wait_for()
            second = page.locator(".msg.assistant", has=page.locator(".buttons")).nth(1)
            await second.locator("button.action.danger").click()
            await page.wait_for_selector(".msg.assistant.done >> text=/result: .*(denied|refused|not approved)/i")
            await shot(page, "approval-3-denied")
            await page.emulate_media(color_scheme="dark")
            await shot(page, "approval-4-dark")
            assert not proof.exists()


async def test_a_waiting_approval_survives_a_reload_and_closes_in_every_tab(home: Path) -> None:
    proof = home / "workspace" / "proof.txt"
    async with FakeLLMServer(responder=shell_responder) as server, chromium() as browser:
        async with ui_app(home, server, agent={"tools": ["run_shell"]}) as (_, channel):
            page = await open_page(browser, channel)
            await say(page, "build it")
            live = ".msg.assistant:has(.buttons button:enabled)"
            await page.locator(live).wait_for()
            # The turn is still waiting: a reload (a new socket, the history again) shows the request again.
            await page.reload()
            await page.wait_for_selector("#status[data-state=ok]")
            await page.locator(live).wait_for()
            # A second tab of the same conversation shows it too, with its buttons live.
            other = await page.context.new_page()
            await other.goto(f"http://127.0.0.1:{channel.port}/")
            await other.wait_for_selector("#status[data-state=ok]")
            tabs = (page, other)
            for tab in tabs:
                request = tab.locator(".msg.assistant", has=tab.locator(".buttons"))
                assert await request.count() == 1  # shown once, not once per replay
                assert COMMAND in await request.text_content()
                assert await request.locator(".buttons button:enabled").count() == 2
            await shot(other, "approval-pending-second-tab")
            assert not proof.exists()
            await other.locator(f"{live} button.action.primary").click()
            # Both tabs: the buttons disabled, the outcome under the request.
            for tab in tabs:
                await tab.locator(".msg.assistant.closed", has_text="Approved by web-user.").wait_for()
                request = tab.locator(".msg.assistant", has=tab.locator(".buttons"))
                assert await request.locator(".buttons button:disabled").count() == 2
                assert COMMAND in await request.text_content()
                await tab.wait_for_selector(".msg.assistant.done >> text=result: shell-ok")
            await shot(page, "approval-closed-first-tab")
            assert proof.read_text() == "ran\n"
            # Closed for good: a reload no longer brings it back.
            await page.reload()
            await page.wait_for_selector("#status[data-state=ok]")
            await page.wait_for_selector(".msg.assistant.done >> text=result: shell-ok")
            assert await page.locator(".msg.assistant .buttons").count() == 0


async def test_buttons_under_a_message_send_their_command_once(home: Path) -> None:
    async with FakeLLMServer() as server, chromium() as browser:
        async with ui_app(home, server) as (_, channel):
            page = await open_page(browser, channel)
            chat = next(c["value"] for c in await page.context.cookies() if c["name"] == f"opu_chat_{channel.port}")
            buttons = [Button(label="Show help", command="/help", style="primary"), Button(label="No", command="/x")]
            await channel.send_buttons(Address(channel="web", chat_id=chat), "Would you like **help**?", buttons)
            row = page.locator(".msg.assistant.done .buttons")
            await row.wait_for()
            assert await page.locator(".msg.assistant strong", has_text="help").count() == 1
            await shot(page, "buttons-1")
            await row.locator("button", has_text="Show help").click()
            await page.wait_for_selector(".msg.user >> text=/help")
            await page.wait_for_selector(".msg.assistant.done >> text=/new")  # the help text lists /new
            assert await row.locator("button:disabled").count() == 2
            await shot(page, "buttons-2-clicked")


async def test_errors_are_shown_as_errors(home: Path) -> None:
    async def broken_history(key: str) -> list[HistoryMessage]:
        raise OSError("disk on fire")

    async with FakeLLMServer(responder=echo_responder()) as server, chromium() as browser:
        async with ui_app(home, server, history=broken_history) as (_, channel):
            page = await open_page(browser, channel)
            error = page.locator(".msg.error[role=alert]")
            await error.wait_for()
            assert "history could not be loaded" in await error.text_content()
            await say(page, "hello")
            await page.wait_for_selector(".msg.assistant.done >> text=You said: hello")
            style = """(el) => { const s = getComputedStyle(el); return [s.color, s.backgroundColor]; }"""
            error_color, error_bg = await error.locator(".body").evaluate(style)
            reply_color, reply_bg = await page.locator(".msg.assistant .body").evaluate(style)
            assert error_color != reply_color and error_bg != reply_bg
            await shot(page, "error")
            await page.emulate_media(color_scheme="dark")
            await shot(page, "error-dark")
