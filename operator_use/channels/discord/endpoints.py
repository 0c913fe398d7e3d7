"""Other Discord endpoints for one client: a proxy or a self-hosted Discord-compatible server.

discord.py takes both URLs from class attributes (`Route.BASE` for REST, `DiscordWebSocket.DEFAULT_GATEWAY`
for the gateway) that every client in the process shares, so setting them would move every other client
too. Instead the client's own `HTTPClient` rewrites what it is about to use: REST requests built on the
official base, and a websocket connect to the default gateway. A RESUME goes where the server's READY said
(`resume_gateway_url`), which a compatible server points at itself.
"""

from __future__ import annotations

import copy
from typing import Any


def rebase_api(http: Any, api_base_url: str) -> None:
    """Send every REST request of `http` (a discord.py `HTTPClient`) to `api_base_url` instead."""
    from discord.http import Route

    request = http.request

    async def rebased(route: Route, **kwargs: Any) -> Any:
        official = Route.BASE  # read per call: discord.py changes it when another API version is chosen
        if route.url.startswith(official + "/"):
            route = copy.copy(route)  # a Route may be reused; ours must not leak into it
            route.url = api_base_url + route.url[len(official) :]
        return await request(route, **kwargs)

    http.request = rebased


def rebase_gateway(http: Any, gateway_url: str) -> None:
    """Open the gateway websocket of `http` at `gateway_url` where discord.py would use its default."""
    import yarl
    from discord.gateway import DiscordWebSocket

    target = yarl.URL(gateway_url)
    ws_connect = http.ws_connect

    async def connect(url: str, **kwargs: Any) -> Any:
        wanted = yarl.URL(url)
        if wanted.with_query(None) == DiscordWebSocket.DEFAULT_GATEWAY:
            url = str(target.update_query(wanted.query))  # keeps v, encoding and compress
        return await ws_connect(url, **kwargs)

    http.ws_connect = connect


def rebase_webhooks(api_base_url: str) -> None:
    """Send interaction responses (a button press's acknowledgement) to `api_base_url` too. discord.py makes
    them with a webhook adapter taken from a context variable, not with the client's `HTTPClient`: set in the
    task that runs the client, it reaches every event handler that client starts, and no other client."""
    from discord.http import Route
    from discord.webhook.async_ import AsyncWebhookAdapter, async_context

    class Rebased(AsyncWebhookAdapter):
        async def request(self, route: Route, *args: Any, **kwargs: Any) -> Any:
            official = Route.BASE
            if route.url.startswith(official + "/"):
                route = copy.copy(route)
                route.url = api_base_url + route.url[len(official) :]
            return await super().request(route, *args, **kwargs)

    async_context.set(Rebased())


async def discover_gateway(http: Any) -> str:
    """The gateway URL the (rebased) API announces for bots: GET /gateway/bot."""
    _, url, _ = await http.get_bot_gateway()
    return str(url)
