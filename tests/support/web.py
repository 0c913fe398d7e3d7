"""Helpers for the web chat tests: the real pipeline behind a WebChannel, and a websocket "tab"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from operator_use.agent.tools import Tool
from operator_use.app import App
from operator_use.channels.web.channel import WebChannel
from operator_use.channels.web.config import WebConfig
from operator_use.providers.llm.openai import OpenAILLM

from ..fakes.llm_server import FakeLLMServer
from .pipeline import make_app

TOKEN = "test-token-0123456789"
# Debian's Chromium, headless, quiet and offline: every browser test launches it with these.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]


@asynccontextmanager
async def web_app(
    home: Path, server: FakeLLMServer, *, tools: list[Tool] | None = None, **config: Any
) -> AsyncIterator[tuple[App, WebChannel]]:
    """The whole agent with only the web channel, on a free port, its token known to the test."""
    announced: list[str] = []
    channel = WebChannel(WebConfig(**{"port": 0, "token": TOKEN, **config}), announce=announced.append)
    llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
    async with make_app(home, channel, llm, tools=tools) as app:  # type: ignore[arg-type]
        assert announced == [channel.url]
        yield app, channel


class Tab:
    """One browser tab's websocket, reading events in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The next event matching `predicate` (every event read on the way is kept in `events`)."""

        async def read() -> dict[str, Any]:
            while True:
                frame = await self.ws.receive()
                if frame.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket ended: {frame.type} {frame.data!r}")
                event = json.loads(frame.data)
                self.events.append(event)
                if predicate(event):
                    return event

        return await asyncio.wait_for(read(), timeout)

    async def next(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.wait(lambda e: e["type"] == kind, timeout)

    async def say(self, text: str) -> None:
        await self.ws.send_json({"type": "message", "text": text})


@asynccontextmanager
async def open_tab(
    channel: WebChannel, *, chat: str = "c1", token: str | None = TOKEN, headers: dict[str, str] | None = None
) -> AsyncIterator[Tab]:
    all_headers = {"Authorization": f"Bearer {token}"} if token else {}
    all_headers.update(headers or {})
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{channel.port}/ws?chat={chat}", headers=all_headers) as ws:
            yield Tab(ws)


async def chat_at(url: str, text: str, until: Callable[[dict[str, Any]], bool] | None = None) -> tuple[str, Tab]:
    """A browser at a printed `Web chat:` address (the link's token becomes its cookie): the page, then `text`
    said on its websocket; back once an event matches `until` (by default: the reply is finalized)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url) as r:
            assert r.status == 200
            page = await r.text()
        async with http.ws_connect(url.split("?")[0] + "ws") as ws:
            tab = Tab(ws)
            await tab.next("history")
            await tab.say(text)
            await tab.wait(until or (lambda e: e["type"] == "finalize"))
    return page, tab
