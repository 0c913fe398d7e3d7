"""Settings of the web chat channel (no aiohttp here: the config module is imported by every command)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, model_validator

from ..base import ChannelConfig

WEB_USER = "web-user"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class WebConfig(ChannelConfig):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    # Binding beyond loopback must be asked for explicitly.
    allow_remote: bool = False
    # None: a random token generated once, kept in <home>/web_token (0600) and reused at every start (an open
    # page reconnects after a restart); delete the file for a new one. Printed at start-up either way.
    token: SecretStr | None = None
    # Whoever holds the token is the local owner.
    allow_from: list[str] = Field(default_factory=lambda: [WEB_USER])
    admins: list[str] = Field(default_factory=lambda: [WEB_USER])
    edit_interval: float | None = 0.1
    # Largest message the page may send, in bytes of the websocket frame.
    max_message_bytes: int = Field(64 * 1024, ge=1024)
    # Largest voice note recorded in the page (the audio itself; its base64 frame is a third larger).
    # The page records Opus at 32 kbit/s: 4 MB is about 16 minutes.
    max_audio_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Past messages shown when a page (re)connects.
    history_limit: int = Field(200, ge=0)

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> WebConfig:
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable from other machines; set channels.web.allow_remote: "
                "true to serve the web chat beyond this machine (its token is then all that protects it)"
            )
        if self.token is not None and len(self.token.get_secret_value()) < 8:
            raise ValueError("channels.web.token must be at least 8 characters (leave it unset for a random one)")
        return self
