"""Serving a fake platform: an aiohttp app on a loopback port we bind ourselves.

Binding the socket before starting the site gives a free port with no race between picking and binding,
and lets a fake come back on the same port after going down."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, **runner_options: Any
) -> tuple[web.AppRunner, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, sock.getsockname()[1]
