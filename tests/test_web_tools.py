"""web_fetch and web_search against local servers (aiohttp on 127.0.0.1) through the real clients.

The servers live on loopback, so tests that must reach them allow exactly their host:port; every other
private address stays refused. Refused targets are never connected to: the check runs before any socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from operator_use.agent.tools import ToolError
from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.tools.config import WebFetchConfig, WebSearchConfig
from operator_use.tools.netguard import BlockedAddress, is_public
from operator_use.tools.search import SearXNG
from operator_use.tools.web import WebFetcher, web_tools

from .support.deps import require_module

ARTICLE = """<!doctype html><html><head><title>Owls</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About</a> | Subscribe now!</nav>
<article><h1>The night life of owls</h1>
<p>Owls hunt at night. Their feathers are shaped so that their flight is almost silent, which lets them
surprise mice and voles in the dark. Most species hear far better than they see.</p>
<p>Barn owls can find prey by sound alone, even in complete darkness, turning their heads to locate it.</p>
</article><footer>Copyright 2024 Example Inc. Cookie settings.</footer></body></html>"""


@dataclass
class Server:
    port: int
    hits: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    sent: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Handler = Callable[[web.Request, Server], Awaitable[web.StreamResponse]]


async def serve(routes: dict[str, Handler], ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    app = web.Application()
    server = Server(0)

    def wrap(handler: Handler):  # type: ignore[no-untyped-def]
        async def run(request: web.Request) -> web.StreamResponse:
            server.hits.append(request.path_qs)
            return await handler(request, server)

        return run

    for path, handler in routes.items():
        app.router.add_route("*", path, wrap(handler))
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


@pytest.fixture
async def site() -> AsyncIterator[Server]:
    async def article(request: web.Request, s: Server) -> web.Response:
        return web.Response(text=ARTICLE, content_type="text/html")

    async def moved(request: web.Request, s: Server) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def big(request: web.Request, s: Server) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            for _ in range(5 * 1024):  # 5 MB in 1 KB lines; the client stops reading long before
                await response.write(b"x" * 1023 + b"\n")
                s.sent.append(1024)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def slow(request: web.Request, s: Server) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        await response.write(b"<html><body>first bytes")
        await s.release.wait()  # never set during the fetch
        return response

    async def binary(request: web.Request, s: Server) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, content_type="image/png")

    async for server in serve({"/article": article, "/moved": moved, "/big": big, "/slow": slow, "/png": binary}):
        yield server


@pytest.fixture
async def other() -> AsyncIterator[Server]:
    """A second loopback server standing for an internal service: it must never be reached."""

    async def secret(request: web.Request, s: Server) -> web.Response:
        return web.Response(text="internal admin panel")

    async for server in serve({"/{tail:.*}": secret}):
        yield server


def allowing(server: Server, **kw: object) -> WebFetcher:
    return WebFetcher(WebFetchConfig(allow_hosts=[f"127.0.0.1:{server.port}"], **kw))  # type: ignore[arg-type]


# --- web_fetch -----------------------------------------------------------------------------------


async def test_default_config_refuses_loopback(site: Server) -> None:
    fetcher = WebFetcher()  # the default: allow_private false, no allow_hosts
    for url in (f"{site.base}/article", f"http://localhost:{site.port}/article", f"http://[::1]:{site.port}/"):
        with pytest.raises(BlockedAddress):
            await fetcher.fetch(url)
    assert site.hits == []


async def test_fetch_extracts_the_readable_text(site: Server) -> None:
    text = await allowing(site).fetch(f"{site.base}/article")
    assert text.startswith(f"URL: {site.base}/article\nStatus: 200 (text/html)")
    assert "Owls hunt at night" in text and "Barn owls" in text
    assert "Cookie settings" not in text and "Subscribe now" not in text  # boilerplate left out


async def test_redirect_within_the_allowed_host_is_followed(site: Server) -> None:
    text = await allowing(site).fetch(f"{site.base}/moved?to=/article")
    assert f"URL: {site.base}/article" in text and "Owls hunt at night" in text
    assert site.hits == ["/moved?to=/article", "/article"]


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{other}/admin",  # another loopback service
        "http://localhost:{other}/admin",  # a name resolving to loopback
        "http://[::1]:{other}/admin",
        "http://[::ffff:127.0.0.1]:{other}/admin",  # IPv4-mapped IPv6
        "http://0.0.0.0:{other}/admin",
        "http://127.1:{other}/admin",  # short form of 127.0.0.1
        "http://2130706433:{other}/admin",  # decimal form of 127.0.0.1
        "http://10.0.0.1/",  # private ranges: refused before any connection is tried
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://[fe80::1]/",
        "http://[fd00::1]/",
    ],
)
async def test_redirect_to_a_private_address_is_refused(site: Server, other: Server, target: str) -> None:
    location = target.format(other=other.port)
    with pytest.raises(ToolError) as err:
        await allowing(site).fetch(f"{site.base}/moved?to={location}")
    assert "private, loopback or link-local" in str(err.value) or "cannot resolve" in str(err.value)
    assert site.hits == [f"/moved?to={location}"]
    assert other.hits == []


async def test_oversize_body_is_cut(site: Server) -> None:
    text = await allowing(site, max_bytes=64 * 1024, max_chars=500_000).fetch(f"{site.base}/big")
    assert "the page is larger than 65536 bytes; only the first 65536 were read" in text
    body = text.split("\n\n", 1)[1]
    assert len(body) <= 64 * 1024
    # The client stopped reading: the server could not push the 5 MB through.
    assert sum(site.sent) < 5 * 1024 * 1024


async def test_slow_server_times_out(site: Server) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ToolError, match=r"timed out after 0.5 s"):
        await allowing(site, timeout=0.5).fetch(f"{site.base}/slow")
    assert loop.time() - started < 5


async def test_binary_content_is_not_dumped(site: Server) -> None:
    text = await allowing(site).fetch(f"{site.base}/png")
    assert "[binary content (108 bytes); not shown]" in text and "PNG" not in text.split("]")[-1]


async def test_too_many_redirects(site: Server) -> None:
    loop_url = f"{site.base}/moved?to=/moved%3Fto%3D/article"
    with pytest.raises(ToolError, match="too many redirects"):
        await allowing(site, max_redirects=1).fetch(loop_url)


@pytest.mark.parametrize(
    "url, message",
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/", "only http and https"),
        ("http://user:pw@127.0.0.1/", "credentials"),
        ("/relative/path", "only http and https"),
        ("http:///nohost", "no host"),
    ],
)
async def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        await WebFetcher().fetch(url)


async def test_allow_private_is_an_explicit_switch(site: Server, other: Server) -> None:
    text = await WebFetcher(WebFetchConfig(allow_private=True)).fetch(f"{other.base}/x")
    assert "internal admin panel" in text


async def test_https_connects_to_the_checked_address_with_the_real_server_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    trustme = require_module("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    hosts: list[str] = []

    async def article(request: web.Request, s: Server) -> web.Response:
        hosts.append(request.host)
        return web.Response(text=ARTICLE, content_type="text/html")

    async for server in serve({"/article": article}, server_context):
        url = f"https://localhost:{server.port}/article"
        allowed = [f"localhost:{server.port}"]
        # The URL is pinned to the checked IP; SNI, the certificate check and Host still say "localhost"
        # ("localhost" may resolve to ::1 first, where nothing listens: the next address is tried).
        text = await WebFetcher(WebFetchConfig(allow_hosts=allowed, ca_file=str(ca_file))).fetch(url)
        assert "Owls hunt at night" in text and hosts == [f"localhost:{server.port}"]
        # Without our CA the certificate is refused: verification is on.
        with pytest.raises(ToolError, match="failed"):
            await WebFetcher(WebFetchConfig(allow_hosts=allowed)).fetch(url)
        assert len(hosts) == 1


def test_is_public() -> None:
    public = ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"]
    private = [
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "198.18.0.1",
        "192.0.2.1",
    ]
    assert all(is_public(ipaddress.ip_address(a)) for a in public)
    assert not any(is_public(ipaddress.ip_address(a)) for a in private)


async def test_web_fetch_tool_error_is_short(site: Server) -> None:
    tools = {t.name: t for t in web_tools(WebFetchConfig())}
    ctx = TurnContext(address=Address(channel="t", chat_id="1"), user_id="u", session_key="t:1", workspace=".")  # type: ignore[arg-type]
    result = await tools["web_fetch"].run(ctx, {"url": f"{site.base}/article"})
    assert result.is_error and result.content.startswith("Error: 127.0.0.1 resolves to a private")
    assert "Traceback" not in result.content and len(result.content) < 200


# --- web_search ----------------------------------------------------------------------------------

# The shape of html.duckduckgo.com/html/ results (trimmed): result links go through /l/?uddg=<target>.
DDG_PAGE = """<!DOCTYPE html><html><head><title>owls at DuckDuckGo</title></head><body>
<div id="links" class="results">
 <div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
   <h2 class="result__title"><a rel="nofollow" class="result__a"
     href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FOwl&amp;rut=abc">Owl - <b>Wikipedia</b></a></h2>
   <div class="result__extras"><div class="result__extras__url">
     <a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FOwl">en.wikipedia.org/wiki/Owl</a>
   </div></div>
   <a class="result__snippet" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FOwl&amp;rut=abc">
     <b>Owls</b> are birds from the order Strigiformes.</a>
   <div class="clear"></div>
  </div>
 </div>
 <div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
   <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://www.audubon.org/owls">Owls | Audubon</a></h2>
   <a class="result__snippet" href="https://www.audubon.org/owls">Learn about the <b>owls</b> of North America.</a>
  </div>
 </div>
 <div class="result results_links results_links_deep result--ad">
  <div class="links_main links_deep result__body">
   <h2 class="result__title"><a class="result__a" href="https://duckduckgo.com/y.js?ad_provider=x">Buy owls</a></h2>
   <a class="result__snippet" href="https://duckduckgo.com/y.js?ad_provider=x">An ad.</a>
  </div>
 </div>
</div></body></html>"""


async def test_web_search_duckduckgo_against_a_fake_endpoint() -> None:
    queries: list[dict[str, str]] = []

    async def html(request: web.Request, s: Server) -> web.Response:
        queries.append(dict(await request.post()))
        return web.Response(text=DDG_PAGE, content_type="text/html")

    async for server in serve({"/html/": html}):
        tools = {t.name: t for t in web_tools(search=WebSearchConfig(base_url=server.base, max_results=5))}
        ctx = TurnContext(address=Address(channel="t", chat_id="1"), user_id="u", session_key="t:1", workspace=".")  # type: ignore[arg-type]
        result = await tools["web_search"].run(ctx, {"query": "night owls"})
        assert not result.is_error, result.content
        assert queries and queries[0]["q"] == "night owls"
        assert result.content == (
            "1. Owl - Wikipedia\nhttps://en.wikipedia.org/wiki/Owl\nOwls are birds from the order Strigiformes.\n\n"
            "2. Owls | Audubon\nhttps://www.audubon.org/owls\nLearn about the owls of North America."
        )
        assert "DuckDuckGo" in tools["web_search"].description


async def test_web_search_with_the_endpoint_down_finds_nothing() -> None:
    async def broken(request: web.Request, s: Server) -> web.Response:
        return web.Response(status=503, text="down")

    async for server in serve({"/html/": broken}):
        tools = {t.name: t for t in web_tools(search=WebSearchConfig(base_url=server.base))}
        ctx = TurnContext(address=Address(channel="t", chat_id="1"), user_id="u", session_key="t:1", workspace=".")  # type: ignore[arg-type]
        result = await tools["web_search"].run(ctx, {"query": "owls"})
        assert result.content == "No results for 'owls'."


async def test_searxng_provider() -> None:
    async def search(request: web.Request, s: Server) -> web.Response:
        assert request.query["format"] == "json"
        return web.json_response(
            {
                "results": [
                    {"title": "Owl", "url": "https://example.org/owl", "content": f"About {request.query['q']}"},
                    {"title": "No url"},
                ]
            }
        )

    async for server in serve({"/search": search}):
        results = await SearXNG(server.base).search("owls", 5)
        assert [(r.title, r.url, r.snippet) for r in results] == [("Owl", "https://example.org/owl", "About owls")]
