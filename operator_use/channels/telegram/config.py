"""Settings of the Telegram channel (no python-telegram-bot here: config.py imports this module for every command)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ..base import ChannelConfig

OFFICIAL_API = "https://api.telegram.org/bot"
OFFICIAL_FILES = "https://api.telegram.org/file/bot"
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")


class TelegramConfig(ChannelConfig):
    numeric_ids = True  # allow_from/admins: user ids; @usernames go in allow_names/admin_names
    # From @BotFather. Never printed or logged.
    token: SecretStr | None = None
    # "polling": long polling with getUpdates (works behind NAT); "webhook": Telegram posts updates to us.
    mode: Literal["polling", "webhook"] = "polling"
    # In groups: answer only when mentioned (@bot or a reply to the bot), to every message, or never.
    group_policy: Literal["mention", "always", "never"] = "mention"
    # Your own Bot API server (telegram-bot-api) goes here; it lifts the 20 MB download limit.
    base_url: str = OFFICIAL_API
    base_file_url: str = OFFICIAL_FILES
    # A local Bot API server started with --local hands out file paths on its own disk.
    local_mode: bool = False
    # Seconds one getUpdates call may wait for updates (long polling).
    poll_timeout: int = Field(30, ge=0, le=50)
    # Times the library's rate limiter retries a 429 itself before the gateway's retry-after takes over.
    flood_retries: int = Field(1, ge=0, le=5)
    # Webhook mode: the public HTTPS URL Telegram posts to, and where our server listens behind it.
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, ge=1, le=65535)
    webhook_path: str = "telegram"
    # Sent by Telegram in X-Telegram-Bot-Api-Secret-Token; required in webhook mode.
    webhook_secret: SecretStr | None = None

    @field_validator("webhook_path")
    @classmethod
    def _strip_slashes(cls, path: str) -> str:
        return path.strip("/")

    @model_validator(mode="after")
    def _check(self) -> TelegramConfig:
        if self.token is not None and not _TOKEN.fullmatch(self.token.get_secret_value()):
            raise ValueError("token does not look like a bot token from @BotFather (digits:letters)")
        if self.enabled and self.token is None:
            raise ValueError(
                "token is required when the channel is enabled "
                "(channels.telegram.token or OPERATOR_CHANNELS__TELEGRAM__TOKEN)"
            )
        if self.mode == "webhook":
            if not self.webhook_url:
                raise ValueError("webhook mode needs webhook_url (the public HTTPS URL Telegram posts to)")
            if not self.webhook_url.startswith("https://") and self.base_url == OFFICIAL_API:
                raise ValueError(
                    "webhook_url must be https:// (Telegram only posts to HTTPS; plain http "
                    "works only with your own Bot API server)"
                )
            if self.webhook_secret is None:
                raise ValueError("webhook mode needs webhook_secret, so forged updates are refused")
        if self.webhook_secret is not None and not _SECRET.fullmatch(self.webhook_secret.get_secret_value()):
            raise ValueError("webhook_secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return self
