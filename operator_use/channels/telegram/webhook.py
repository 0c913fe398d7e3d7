"""Webhook mode: our own HTTP endpoint for the updates Telegram posts, feeding the Application's update queue
(python-telegram-bot's "custom webhook" way). Imported only when the channel connects in webhook mode.

PTB's own webhook server answers 400 to an update it cannot parse (a message without `message_id` or
`date`). Telegram then delivers that update again and again, and every later one waits behind it: the bot
falls silent. Here such an update is logged (its id and the reason, never its content) and answered 200, so
Telegram moves on, as the polling path does (ptb.py). Otherwise it does what PTB's server does: POSTs to the
path only, the secret in X-Telegram-Bot-Api-Secret-Token (compared in constant time) or 403, JSON or 415.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application

from .config import TelegramConfig
from .ptb import readable, translated_errors

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def start_webhook(app: Application, config: TelegramConfig, allowed_updates: list[str]) -> web.AppRunner:
    """Listen on `webhook_listen:webhook_port/webhook_path`, then have Telegram post there (setWebhook).
    Returns the runner; `cleanup()` it to stop."""
    assert config.webhook_secret is not None and config.webhook_url  # checked by the config
    secret = config.webhook_secret.get_secret_value().encode()

    async def receive(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), secret):
            return web.Response(status=403)
        if request.content_type != "application/json":
            return web.Response(status=415)
        try:
            data: Any = await request.json()
        except ValueError:
            return web.Response(status=400)
        raw = readable(data)  # logs an update it cannot read
        if raw is not None:
            await app.update_queue.put(Update.de_json(raw, app.bot))
        return web.Response(status=200)

    server = web.Application(client_max_size=4 * 1024 * 1024)
    path = "/" + config.webhook_path
    server.router.add_post(path, receive)
    if config.webhook_path:
        server.router.add_post(path + "/", receive)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.webhook_listen, config.webhook_port).start()
        with translated_errors():
            await app.bot.set_webhook(
                url=config.webhook_url,
                secret_token=config.webhook_secret.get_secret_value(),
                allowed_updates=allowed_updates,
            )
    except BaseException:
        await runner.cleanup()
        raise
    return runner
