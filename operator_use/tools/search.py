"""Search providers for web_search: DuckDuckGo (default, through the `ddgs` client) and SearXNG.

A provider is anything with a `name` and `async search(query, max_results) -> list[SearchResult]`.
`base_url` points a provider at another address: a self-hosted SearXNG, or a fake server in tests
(for DuckDuckGo, the HTML endpoint `<base_url>/html/` that ddgs posts to).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import httpx

from ..agent.tools import ToolError
from .config import WebSearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str = ""


class SearchProvider(Protocol):
    name: str

    async def search(self, query: str, max_results: int) -> list[SearchResult]: ...


def _unwrap(href: str) -> str:
    """DuckDuckGo's HTML results may link through //duckduckgo.com/l/?uddg=<target>."""
    parts = urlsplit(href if "://" in href else "https:" + href if href.startswith("//") else href)
    if parts.netloc.endswith("duckduckgo.com") and parts.path.startswith("/l/"):
        target = parse_qs(parts.query).get("uddg")
        if target:
            return target[0]
    return href


class DuckDuckGo:
    name = "DuckDuckGo"

    def __init__(self, base_url: str | None = None, timeout: float = 15.0) -> None:
        self.base_url = base_url
        self.timeout = timeout

    def _search_sync(self, query: str) -> list[SearchResult]:
        from ddgs.engines.duckduckgo import Duckduckgo  # lazy: ddgs loads an HTTP client and lxml

        engine = Duckduckgo(timeout=max(1, int(self.timeout)))
        if self.base_url:
            engine.search_url = self.base_url.rstrip("/") + "/html/"
        found = engine.search(query) or []
        return [SearchResult(r.title, _unwrap(r.href), r.body) for r in found if r.href]

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        try:
            results = await asyncio.wait_for(asyncio.to_thread(self._search_sync, query), self.timeout + 5)
        except Exception as exc:  # noqa: BLE001 — ddgs wraps network errors in its own exception family
            log.warning("DuckDuckGo search failed: %r", exc)
            raise ToolError(f"the search failed ({type(exc).__name__}); try again or rephrase") from None
        return results[:max_results]


class SearXNG:
    name = "SearXNG"

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                response = await client.get(f"{self.base_url}/search", params={"q": query, "format": "json"})
                response.raise_for_status()
                data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("SearXNG search failed: %r", exc)
            raise ToolError(f"the search failed ({type(exc).__name__}); try again or rephrase") from None
        return [
            SearchResult(str(r.get("title", "")), str(r.get("url", "")), str(r.get("content", "")))
            for r in data.get("results", [])[:max_results]
            if r.get("url")
        ]


def make_provider(config: WebSearchConfig) -> SearchProvider:
    if config.provider == "searxng":
        if not config.base_url:
            raise ValueError("tools.web_search.base_url is required for the searxng provider")
        return SearXNG(config.base_url, config.timeout)
    return DuckDuckGo(config.base_url, config.timeout)
