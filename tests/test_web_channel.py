"""The web chat channel at the protocol level: aiohttp's client (HTTP and websocket) against the real
pipeline (WebChannel -> bus -> orchestrator -> agent -> OpenAI SDK -> fake LLM server -> gateway)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from operator_use.app import App
from operator_use.channels.web.channel import WebChannel
from operator_use.channels.web.config import WebConfig
from operator_use.channels.web.server import frame_cap
from operator_use.config import ConfigError, load_config
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer, Reply, echo_responder
from .support.agent_process import agent_env, fake_model, running_agent, web_chat
from .support.chat import ChatChannel
from .support.pipeline import Gates
from .support.web import TOKEN, Tab, chat_at, open_tab, web_app


def base(channel: WebChannel) -> str:
    return f"http://127.0.0.1:{channel.port}"


# --- authentication -------------------------------------------------------------------------


async def test_page_needs_the_token_and_trades_it_for_a_cookie(home: Path) -> None:
    async with FakeLLMServer() as server, web_app(home, server) as (_, channel):
        # unsafe=True: aiohttp's cookie jar otherwise ignores cookies set by an IP address, as browsers do not.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(base(channel) + "/") as r:
                assert r.status == 401 and "token" in (await r.text()).lower()
            async with http.get(base(channel) + "/?token=wrong-token-123") as r:
                assert r.status == 403 and "Wrong token" in await r.text()
            async with http.get(base(channel) + "/static/app.js") as r:
                assert r.status == 401
            async with http.get(channel.url, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/"
                cookies = r.headers.getall("Set-Cookie")
                token_cookie = next(c for c in cookies if c.startswith(f"opu_token_{channel.port}="))
                assert "HttpOnly" in token_cookie and "SameSite=Strict" in token_cookie
            async with http.get(base(channel) + "/") as r:
                assert r.status == 200 and "/static/app.js" in await r.text()
                csp = r.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            for asset in ("app.js", "markdown-it.min.js", "style.css", "markdown-it.LICENSE.txt"):
                async with http.get(base(channel) + "/static/" + asset) as r:
                    assert r.status == 200, asset
            async with http.get(base(channel) + "/static/app.js") as r:
                assert r.content_type == "text/javascript"
            async with http.get(base(channel) + "/static/..%2Fchannel.py") as r:
                assert r.status == 404
            # A page reached through another host name (DNS rebinding) is refused even with the cookie.
            http.cookie_jar.update_cookies({f"opu_token_{channel.port}": TOKEN})
            async with http.get(base(channel) + "/", headers={"Host": f"evil.example:{channel.port}"}) as r:
                assert r.status == 403


@pytest.mark.parametrize("token", [None, "wrong-token-123"])
async def test_websocket_without_the_token_is_refused(home: Path, token: str | None) -> None:
    async with FakeLLMServer() as server, web_app(home, server) as (_, channel):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with open_tab(channel, token=token):
                pass
        assert refused.value.status == 401


async def test_a_flood_of_bogus_cookies_is_one_warning(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="operator_use.channels.web")

    def refusals(level: int) -> list[str]:
        return [
            r.getMessage() for r in caplog.records if "without a valid token" in r.getMessage() and r.levelno == level
        ]

    async with FakeLLMServer() as server, web_app(home, server) as (_, channel):
        origin = {"Origin": base(channel)}
        for i in range(50):  # a new cookie every time, half of them as the page would send them
            cookies = {f"opu_token_{channel.port}": f"bogus-{i}"}
            async with aiohttp.ClientSession(cookies=cookies, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                if i % 2:
                    async with http.ws_connect(base(channel) + "/ws", headers=origin) as ws:
                        assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
                else:
                    with pytest.raises(aiohttp.WSServerHandshakeError):
                        await http.ws_connect(base(channel) + "/ws")
    assert len(refusals(logging.WARNING)) == 1, refusals(logging.WARNING)
    assert len(refusals(logging.DEBUG)) == 49


def test_refusal_warnings_are_per_address_and_rate_limited() -> None:
    from operator_use.channels.web.refusals import RefusalLog

    now = [0.0]
    refusals = RefusalLog(interval=60, per_address=3600, clock=lambda: now[0])
    assert refusals.refused("127.0.0.1") == 0
    assert [refusals.refused("127.0.0.1") for _ in range(5)] == [None] * 5
    assert refusals.refused("10.0.0.2") is None  # a new address within the minute: counted, not warned
    now[0] = 61.0
    assert refusals.refused("127.0.0.1") is None  # the same address: once an hour
    assert refusals.refused("10.0.0.2") == 7  # another address after the minute: warned, with what was not logged
    assert refusals.refused("10.0.0.3") is None
    now[0] = 3601.0
    assert refusals.refused("127.0.0.1") == 1


async def test_websocket_checks_the_origin(home: Path) -> None:
    async with FakeLLMServer() as server, web_app(home, server) as (_, channel):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with open_tab(channel, headers={"Origin": "http://evil.example"}):
                pass
        assert refused.value.status == 403
        async with open_tab(channel, headers={"Origin": f"http://127.0.0.1:{channel.port}"}) as tab:
            assert (await tab.next("history"))["items"] == []


async def test_websocket_accepts_the_cookie_the_page_set(home: Path) -> None:
    async with FakeLLMServer() as server, web_app(home, server) as (_, channel):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(channel.url) as r:
                assert r.status == 200
            async with http.ws_connect(base(channel) + "/ws") as ws:
                assert (await Tab(ws).next("history"))["type"] == "history"


def test_binding_beyond_loopback_needs_allow_remote() -> None:
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.com"):
        with pytest.raises(ValidationError, match="allow_remote"):
            WebConfig(host=host)
    assert WebConfig(host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert WebConfig(host=host).host == host
    with pytest.raises(ConfigError, match=r"channels\.web.*allow_remote"):
        load_config(channels={"web": {"host": "0.0.0.0"}})
    with pytest.raises(ValidationError, match="at least 8"):
        WebConfig(token="short")


async def test_a_random_token_is_printed_once_and_never_logged(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    announced: list[str] = []
    channel = WebChannel(WebConfig(port=0), announce=announced.append)

    async def publish(message) -> None:  # type: ignore[no-untyped-def]
        return None

    await channel.start(publish)
    try:
        assert len(channel.token) >= 32 and announced == [f"http://127.0.0.1:{channel.port}/?token={channel.token}"]
        assert channel.status() == "up"
        async with open_tab(channel, token=channel.token) as tab:
            await tab.next("history")
    finally:
        await channel.stop()
    assert channel.status() == "down"
    await channel.start(publish)  # a restart of the channel does not print it again
    await channel.stop()
    assert len(announced) == 1
    assert channel.token not in caplog.text


async def test_stopping_closes_open_tabs_at_once(home: Path) -> None:
    channel = WebChannel(WebConfig(port=0, token=TOKEN), announce=None)

    async def publish(message) -> None:  # type: ignore[no-untyped-def]
        return None

    await channel.start(publish)
    async with open_tab(channel) as tab:
        await tab.next("history")
        closing = asyncio.ensure_future(tab.ws.receive())  # a browser reads all the time, and answers the close
        await asyncio.wait_for(channel.stop(), 5)
        frame = await closing
        assert frame.type == aiohttp.WSMsgType.CLOSE and frame.data == aiohttp.WSCloseCode.GOING_AWAY


# --- the conversation ------------------------------------------------------------------------


async def test_reply_streams_into_the_page_as_edits(home: Path) -> None:
    before, after = "Let me check that.", "The reply arrives piece by piece, edited in place until it is complete."
    answer = f"{before}\n\n{after}"
    gates = Gates()  # the model's tool call holds the turn with part of the reply on the page
    script = [
        Reply(text=before, tool_calls=[{"name": "gate", "arguments": {"name": "g"}}]),
        Reply(text=after, chunk_size=6),
    ]
    async with (
        FakeLLMServer(script) as server,
        web_app(home, server, tools=[gates.tool()]) as (app, channel),
        open_tab(channel) as tab,
    ):
        await tab.next("history")
        await tab.say("tell me something")
        echo = await tab.next("user")
        assert echo["text"] == "tell me something"
        first = await tab.wait(lambda e: e["type"] in ("send", "edit") and e["text"] == before)
        await gates.wait_entered("g")
        gates.release["g"].set()
        final = await tab.wait(lambda e: e["type"] == "edit" and e["text"] == answer)
        done = await tab.next("finalize")
        assert final["id"] == first["id"] == done["id"]
        sent = [e for e in tab.events if e["type"] == "send"]
        assert len(sent) == 1 and sent[0]["reply_to"] == echo["id"]
        texts = [e["text"] for e in tab.events if e["type"] in ("send", "edit")]
        assert all(answer.startswith(t) for t in texts) and len(set(texts)) >= 2
        assert final["plain"] is False  # markdown: the page renders it
        assert any(e["type"] == "typing" for e in tab.events)
        assert app.gateway.status()["web"] == "up"
        # The history joins the text around the tool call back into the one message the page showed.
        async with open_tab(channel) as again:
            items = (await again.next("history"))["items"]
        assert items == [{"role": "user", "text": "tell me something"}, {"role": "assistant", "text": answer}]


async def test_the_model_text_reaches_the_page_as_text_never_as_markup(home: Path) -> None:
    # The page renders it with markdown-it, raw HTML off (tests/test_web_browser.py checks the rendering).
    answer = "**Bold** <script>alert(1)</script> <img src=x onerror=alert(2)>\n\n```python\nprint('<b>')\n```"
    async with (
        FakeLLMServer([Reply(text=answer)]) as server,
        web_app(home, server) as (_, channel),
        open_tab(channel) as tab,
    ):
        await tab.next("history")
        await tab.say("format")
        done = await tab.next("finalize")
        shown = [e for e in tab.events if e.get("id") == done["id"] and e["type"] in ("send", "edit")]
        assert shown[-1]["text"] == answer and shown[-1]["plain"] is False
        assert all(
            set(e) == {"type", "id", "text", "plain"} | ({"reply_to"} if e["type"] == "send" else set()) for e in shown
        )


async def test_history_is_sent_on_reconnect(home: Path) -> None:
    async with (
        FakeLLMServer([Reply(text="First **answer**."), Reply(text="Second.")]) as server,
        web_app(home, server) as (_, channel),
    ):
        async with open_tab(channel) as tab:
            await tab.next("history")
            await tab.say("one")
            await tab.next("finalize")
            await tab.say("two")
            await tab.next("user")
            await tab.next("finalize")
        async with open_tab(channel) as again:
            history = (await again.next("history"))["items"]
        assert [(i["role"], i["text"]) for i in history] == [
            ("user", "one"),
            ("assistant", "First **answer**."),
            ("user", "two"),
            ("assistant", "Second."),
        ]
        async with open_tab(channel, chat="another-browser") as other:
            assert (await other.next("history"))["items"] == []


async def test_oversized_and_malformed_frames_get_error_events(home: Path) -> None:
    # A small voice-note limit keeps the frame cap at 16x the text limit (a 1 MB frame to refuse).
    async with (
        FakeLLMServer([Reply(text="Still here.")]) as server,
        web_app(home, server, max_audio_bytes=64 * 1024) as (app, channel),
        open_tab(channel) as tab,
    ):
        assert (await tab.next("history"))["max_message_bytes"] == 64 * 1024
        await tab.say("x" * (70 * 1024))
        assert "too long" in (await tab.next("error"))["error"]
        for bad in ("not json", "[1, 2]", '{"type": "nonsense"}', '{"type": "message", "text": 5}'):
            await tab.ws.send_str(bad)
            assert "malformed" in (await tab.next("error"))["error"]
        await tab.ws.send_bytes(b"\x00\x01")
        assert "binary" in (await tab.next("error"))["error"]
        await tab.say("   ")
        assert "empty" in (await tab.next("error"))["error"]
        # The connection survived all of it, and nothing reached the agent but the real message.
        await tab.say("hello")
        assert (await tab.next("send"))["text"] == "Still here."
        await tab.next("finalize")
        assert len(server.requests) == 1
        assert [m.role for m in (await app.sessions.load("web:c1")).messages] == ["human", "ai"]
        # A frame far beyond the limit is not even buffered: the socket is closed as "message too big".
        await tab.ws.send_str("x" * (frame_cap(channel.web_config) + 1))
        closing = await tab.ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert tab.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_frames_the_json_decoder_chokes_on_get_a_reason_and_no_traceback(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [
        ('{"type": "message", "text": "hi", "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ('{"type": "message", "text": "hi", "n": ' + "9" * 5000 + "}", "4300 digits"),
        ('{"type": "message", "text": "hi \\ud800"}', "not valid Unicode"),
        ('{"type": "audio", "mime": "audio/\\udfff", "data": "QUJD"}', "not valid Unicode"),
    ]
    async with (
        FakeLLMServer([Reply(text="Still here.")]) as server,
        web_app(home, server) as (_app, channel),
        open_tab(channel) as tab,
    ):
        await tab.next("history")
        for frame, reason in bad:
            await tab.ws.send_str(frame)
            assert reason in (await tab.next("error"))["error"], frame
        await tab.say("hello")
        assert (await tab.next("send"))["text"] == "Still here."
        await tab.next("finalize")
    assert len(server.requests) == 1  # none of the bad frames reached the model
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_every_tab_of_a_conversation_gets_the_events(home: Path) -> None:
    async with (
        FakeLLMServer([Reply(text="Seen by both tabs.")]) as server,
        web_app(home, server) as (_, channel),
        open_tab(channel) as tab1,
        open_tab(channel) as tab2,
        open_tab(channel, chat="elsewhere") as other,
    ):
        for t in (tab1, tab2, other):
            await t.next("history")
        await tab1.say("hi from tab 1")
        for t in (tab1, tab2):
            assert (await t.next("user"))["text"] == "hi from tab 1"
            await t.wait(lambda e: e["type"] in ("send", "edit") and e["text"] == "Seen by both tabs.")
            await t.next("finalize")
        # A different conversation (another browser) saw nothing of it.
        await other.say("/start")
        assert (await other.next("send"))["text"].startswith("Hello!")
        assert [e["type"] for e in other.events] == ["hello", "history", "user", "send"]


async def test_open_buttons_come_after_the_history_until_closed_or_archived(home: Path) -> None:
    from operator_use.channels.web.channel import OPEN_BUTTONS_PER_CHAT
    from operator_use.messages import Address, Button

    here = Address(channel="web", chat_id="c1")
    async with FakeLLMServer() as server, web_app(home, server) as (_, channel):
        buttons = [Button(label="Approve", command="/approve ab12", style="primary")]
        ids = [await channel.send_buttons(here, f"request {i}", buttons) for i in range(OPEN_BUTTONS_PER_CHAT + 2)]
        async with open_tab(channel) as tab:
            replayed = [await tab.next("send") for _ in ids[2:]]  # bounded: the two oldest are forgotten
            assert [e["type"] for e in tab.events[:2]] == ["hello", "history"]
            assert [e["id"] for e in replayed] == ids[2:] and replayed[0]["text"] == "request 2"
            assert replayed[0]["buttons"] == [{"label": "Approve", "command": "/approve ab12", "style": "primary"}]
            await channel.close_buttons(here, ids[2], "request 2\n\nApproved by web-user.")
            closed = await tab.next("close_buttons")
            assert closed == {"type": "close_buttons", "id": ids[2], "text": "request 2\n\nApproved by web-user."}
        async with open_tab(channel) as tab:
            assert [(await tab.next("send"))["id"] for _ in ids[3:]] == ids[3:]  # the closed one is not replayed
            await tab.say("/new")  # archived: the view is emptied, nothing is replayed any more
            await tab.next("clear")
        for chat in ("c1", "elsewhere"):  # and another conversation never had any
            async with open_tab(channel, chat=chat) as tab:
                await tab.say("/start")
                assert (await tab.next("send"))["text"].startswith("Hello!")
                assert [e["type"] for e in tab.events] == ["hello", "history", "user", "send"]


async def test_commands_work_from_the_page(home: Path) -> None:
    async with (
        FakeLLMServer(responder=echo_responder()) as server,
        web_app(home, server) as (app, channel),
        open_tab(channel) as tab,
    ):
        await tab.next("history")
        await tab.say("/help")
        help_text = (await tab.next("send"))["text"]
        assert "/new" in help_text and "/restart" in help_text  # web-user is the owner: admin commands listed
        await tab.say("/status")
        assert "web up" in (await tab.next("send"))["text"]
        await tab.say("remember me")
        reply = await tab.wait(lambda e: e["type"] in ("send", "edit") and e["text"] == "You said: remember me")
        await tab.wait(lambda e: e["type"] == "finalize" and e["id"] == reply["id"])
        await tab.say("/new")
        assert "new conversation" in (await tab.wait(lambda e: e["type"] == "send" and "new" in e["text"]))["text"]
        assert (await app.sessions.load("web:c1")).messages == []


async def test_a_busy_port_leaves_the_other_channels_running(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        async with FakeLLMServer([Reply(text="The terminal still works.")]) as server:
            web = WebChannel(WebConfig(port=port, token=TOKEN), announce=None)
            chat = ChatChannel()
            config = load_config(home=home, agent={"workspace": home / "workspace"})
            llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
            async with App(
                config, channels=[web, chat], llm=llm, tools=[], gateway_options={"start_retry_base": 60}
            ) as app:
                assert app.gateway.status() == {"web": "failed", "test": "up"}  # not retried: nothing frees it
                assert f"cannot listen on 127.0.0.1:{port}" in caplog.text and "in use" in caplog.text
                await chat.say("hi")
                await chat.wait_for(lambda: len(chat.finalized()) == 1)
                assert chat.texts() == ["The terminal still works."]
    finally:
        busy.close()


async def test_run_starts_the_web_chat_and_prints_its_address(home: Path) -> None:
    """`operator-use run` (what `make run` starts) as a real process: the address is printed on the console,
    the page answers through it, and the token never reaches the log file."""
    async with FakeLLMServer(responder=echo_responder()) as server:
        # The terminal chat as configured by default: it turns itself off (stdin is a pipe, not a terminal).
        env = agent_env(
            home,
            **fake_model(server.openai_base_url),
            OPERATOR_CHANNELS__CLI__ENABLED="true",
            **web_chat(),
        )
        async with running_agent(env, stdin=asyncio.subprocess.PIPE) as agent:
            url = agent.web_chat_url
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{32,}", url)
            token = url.split("token=")[1]
            page, _ = await chat_at(
                url,
                "hi from the browser",
                until=lambda e: e["type"] in ("send", "edit") and e["text"] == "You said: hi from the browser",
            )
            assert "/static/app.js" in page
    assert agent.proc.returncode == 0
    assert token not in (home / "logs" / "operator-use.log").read_text()
