"""web_fetch and web_search.

web_fetch: GET one http(s) URL with httpx and return its readable text (trafilatura extracts the main
content of HTML as markdown). Bounded: `max_bytes` of body are read (the rest is cut, not downloaded),
`timeout` seconds for the whole fetch, redirects followed by hand so each hop is checked again by
netguard.py (no loopback, private or link-local address unless allowed). The environment's proxy
settings are ignored: a proxy would make the address check meaningless.

web_search: a pluggable provider (search.py); DuckDuckGo by default.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from urllib.parse import urljoin

import httpx
from pydantic import BaseModel, Field

from ..agent.tools import Tool, ToolError
from ..agent.turn import TurnContext
from .config import WebFetchConfig, WebSearchConfig
from .netguard import Target, check_url
from .search import SearchProvider, make_provider

log = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)
_TEXTUAL = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml",
    "application/javascript",
    "application/ld+json",
    "application/rss",
    "application/atom",
)


class WebFetchParams(BaseModel):
    url: str = Field(description="The http(s) URL to fetch.")


class WebSearchParams(BaseModel):
    query: str = Field(description="What to search for.")
    max_results: int | None = Field(None, ge=1, le=25, description="How many results (default from config).")


def _pinned(url: httpx.URL, target: Target, ip: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL aimed at a checked address, with the Host header and TLS server name (for SNI and the
    certificate check) of the original."""
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.host} if url.scheme == "https" else {}
    return url.copy_with(host=ip), headers, extensions


def _verify(ca_file: str | None) -> ssl.SSLContext | bool:
    if not ca_file:
        return True  # httpx's default: certifi's CA bundle
    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    context.load_verify_locations(ca_file)  # e.g. the CA of a self-hosted service in allow_hosts
    return context


def _extract(body: bytes, content_type: str, encoding: str | None, url: str) -> str:
    try:
        text = body.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset name Python does not know
        text = body.decode("utf-8", errors="replace")
    if "html" not in content_type and not text.lstrip()[:100].lower().startswith(("<!doctype html", "<html")):
        return text
    import trafilatura  # lazy: lxml and friends load only when a page is fetched

    extracted = trafilatura.extract(
        text, url=url, output_format="markdown", include_links=True, include_tables=True, favor_recall=True
    )
    if extracted:
        return extracted
    from lxml import etree  # trafilatura found no main content: fall back to all the text
    from lxml import html as lxml_html

    try:
        return " ".join(lxml_html.fromstring(text).text_content().split())
    except (ValueError, etree.LxmlError):  # unparsable markup ("Document is empty", an encoding declaration)
        return text


class WebFetcher:
    def __init__(self, config: WebFetchConfig | None = None) -> None:
        self.config = config or WebFetchConfig()

    async def fetch(self, url: str) -> str:
        try:
            async with asyncio.timeout(self.config.timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise ToolError(f"fetching {url} timed out after {self.config.timeout:g} s") from None
        except httpx.HTTPError as exc:
            log.info("web_fetch %s failed: %r", url, exc)
            raise ToolError(f"fetching {url} failed ({type(exc).__name__})") from None

    async def _fetch(self, url: str) -> str:
        current = httpx.URL(url.strip())
        async with httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            timeout=self.config.timeout,
            headers={"User-Agent": self.config.user_agent},
            verify=_verify(self.config.ca_file),
        ) as client:
            for _ in range(self.config.max_redirects + 1):
                target = await check_url(str(current), self.config)
                response = await self._send(client, current, target)
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECTS and location:
                        current = httpx.URL(urljoin(str(current), location))
                        continue
                    return await self._read(str(current), response)
                finally:
                    await response.aclose()
        raise ToolError(f"too many redirects (more than {self.config.max_redirects}) from {url}")

    async def _send(self, client: httpx.AsyncClient, url: httpx.URL, target: Target) -> httpx.Response:
        """GET from the first checked address that accepts a connection (a name may resolve to an IPv6
        and an IPv4 address, only one of them reachable)."""
        for i, ip in enumerate(target.ips):
            pinned, headers, extensions = _pinned(url, target, ip)
            request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
            try:
                return await client.send(request, stream=True)
            except httpx.ConnectError:
                if i == len(target.ips) - 1:
                    raise
        raise AssertionError("unreachable: check_url returns at least one address")

    async def _read(self, url: str, response: httpx.Response) -> str:
        limit = self.config.max_bytes
        content_type = response.headers.get("content-type", "").lower()
        body = bytearray()
        truncated = False
        async for chunk in response.aiter_bytes():  # decompressed: a gzip bomb is cut here too
            body += chunk
            if len(body) > limit:
                del body[limit:]
                truncated = True
                break
        head = f"URL: {url}\nStatus: {response.status_code} ({content_type.split(';')[0] or 'unknown type'})"
        if truncated:
            head += f"\n[the page is larger than {limit} bytes; only the first {limit} were read]"
        if content_type and not content_type.startswith(_TEXTUAL) and "html" not in content_type:
            return head + f"\n[binary content ({len(body)} bytes{'+' if truncated else ''}); not shown]"
        text = await asyncio.to_thread(_extract, bytes(body), content_type, response.charset_encoding, url)
        if len(text) > self.config.max_chars:
            text = text[: self.config.max_chars] + f"\n[text cut at {self.config.max_chars} characters]"
        return head + "\n\n" + (text.strip() or "(no readable text)")


def web_tools(
    fetch: WebFetchConfig | None = None, search: WebSearchConfig | None = None, provider: SearchProvider | None = None
) -> list[Tool]:
    fetcher = WebFetcher(fetch)
    search = search or WebSearchConfig()
    engine = provider or make_provider(search)

    async def web_fetch(ctx: TurnContext, p: WebFetchParams) -> str:
        return await fetcher.fetch(p.url)

    async def web_search(ctx: TurnContext, p: WebSearchParams) -> str:
        if not p.query.strip():
            raise ToolError("the query is empty")
        results = await engine.search(p.query, p.max_results or search.max_results)
        if not results:
            return f"No results for {p.query!r}."
        return "\n\n".join(f"{i}. {r.title}\n{r.url}\n{r.snippet}".rstrip() for i, r in enumerate(results, 1))

    return [
        Tool(
            "web_fetch",
            "Fetch a web page (http/https) and return its readable text as markdown. Private and "
            "local network addresses are refused.",
            WebFetchParams,
            web_fetch,
            risk="medium",
            max_output=fetcher.config.max_chars + 1024,
        ),
        Tool(
            "web_search",
            f"Search the web ({engine.name}); returns titles, URLs and snippets.",
            WebSearchParams,
            web_search,
            risk="low",
        ),
    ]
