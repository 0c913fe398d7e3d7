"""Settings of the Slack channel (no Slack SDK here: config.py imports this module for every command)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ..base import ChannelConfig

DEFAULT_API_BASE_URL = "https://slack.com/api/"


class SlackConfig(ChannelConfig):
    # Bot User OAuth Token (OAuth & Permissions), "xoxb-...".
    bot_token: SecretStr | None = None
    # App-level token with the connections:write scope (Basic Information), "xapp-...": Socket Mode.
    app_token: SecretStr | None = None
    # Basic Information > Signing Secret: verifies requests in HTTP events mode.
    signing_secret: SecretStr | None = None
    # "socket": the app opens a websocket to Slack (no public URL). "http": Slack POSTs events to us.
    mode: Literal["socket", "http"] = "socket"
    # Web API base; GovSlack ("https://slack-gov.com/api/") and API proxies use another host.
    api_base_url: str = DEFAULT_API_BASE_URL
    # HTTP events mode: where the Request URL is served (put TLS in front of it).
    http_host: str = "127.0.0.1"
    http_port: int = Field(3000, ge=0, le=65535)
    http_path: str = "/slack/events"
    # Retries the Slack SDK makes itself on 429 (honouring Retry-After) before the gateway is told.
    rate_limit_retries: int = Field(1, ge=0, le=10)
    # Socket Mode keep-alive: seconds between pings; a dead socket is noticed within a few of them.
    ping_interval: float = Field(10.0, gt=0)
    # Attachments larger than this are not downloaded (the agent is told so).
    max_file_bytes: int = Field(25 * 1024 * 1024, ge=1)
    # Channel threads the bot takes part in (answered without a mention); the oldest are forgotten.
    max_tracked_threads: int = Field(2000, ge=1)
    # Other files are saved here, relative to the agent's workspace.
    inbox_dir: str = "inbox"
    # Slack's rate tier allows about one chat.update per second per message.
    edit_interval: float | None = 1.0

    @field_validator("api_base_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # The SDK joins base URL and method name with no separator of its own.
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_base_url must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _tokens_for_mode(self) -> SlackConfig:
        if not self.enabled:
            return self
        _need(self.bot_token, "bot_token", "xoxb-")
        if self.mode == "socket":
            _need(self.app_token, "app_token", "xapp-")
        elif self.signing_secret is None or not self.signing_secret.get_secret_value():
            raise ValueError("channels.slack.signing_secret is required in http mode")
        return self


def _need(token: SecretStr | None, key: str, prefix: str) -> None:
    if token is None or not token.get_secret_value():
        raise ValueError(f"channels.slack.{key} is required (a token starting with {prefix})")
    if not token.get_secret_value().startswith(prefix):
        raise ValueError(f"channels.slack.{key} must start with {prefix}")
