"""HTTP events mode: Slack POSTs events to our Request URL; Bolt verifies each request's signature
(X-Slack-Signature, HMAC-SHA256 of the body with the signing secret, timestamp within five minutes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve_events(app: Any, host: str, port: int, path: str) -> tuple[web.AppRunner, int]:
    """Serve the Bolt `AsyncApp` at `path`; returns the runner and the port actually bound."""
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

    async def events(request: web.Request) -> web.Response:
        response = await app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    web_app = web.Application()
    web_app.router.add_post(path, events)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
