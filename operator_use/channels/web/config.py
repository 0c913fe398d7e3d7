"""Settings of the web chat channel."""

from __future__ import annotations

from pydantic import Field, SecretStr

from ..base import ChannelConfig


class WebConfig(ChannelConfig):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    # Binding beyond loopback must be asked for explicitly.
    allow_remote: bool = False
    # None: a fresh random token is generated and printed at start-up.
    token: SecretStr | None = None
    # Whoever holds the token is the local owner.
    allow_from: list[str] = Field(default_factory=lambda: ["web-user"])
    admins: list[str] = Field(default_factory=lambda: ["web-user"])
    edit_interval: float | None = 0.1
