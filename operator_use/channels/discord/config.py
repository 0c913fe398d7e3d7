"""Settings of the Discord channel (importable without discord.py: config.py loads it at start-up)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ..base import ChannelConfig

# When the bot answers a message in a guild channel or thread (direct messages are always answered).
ReplyPolicy = Literal["mention", "all", "never"]


class DiscordConfig(ChannelConfig):
    numeric_ids = True  # allow_from/admins: user ids (snowflakes); usernames go in allow_names/admin_names

    # The bot token from the developer portal (Bot → Reset Token). Never printed or logged.
    token: SecretStr | None = None
    # REST API base with its version, e.g. "https://discord.com/api/v10", and gateway websocket URL, for a
    # proxy or a self-hosted Discord-compatible server; None: Discord's (discord.py's own). With only
    # api_base_url set, the gateway URL is asked of that server (GET /gateway/bot). For this client only.
    api_base_url: str | None = None
    gateway_url: str | None = None
    # Besides allow_from (user ids): anyone holding one of these role ids, or posting in one of these
    # guilds (server ids), may talk to the agent.
    allow_roles: list[str] = Field(default_factory=list)
    allow_guilds: list[str] = Field(default_factory=list)
    # "mention": only when the bot is @mentioned or replied to; "all": every message; "never": ignore.
    guild_reply: ReplyPolicy = "mention"
    # Per thread, channel or guild id (looked up in that order) a policy overriding guild_reply.
    reply_overrides: dict[str, ReplyPolicy] = Field(default_factory=dict)
    # Answer direct messages at all (the allowlist still applies).
    direct_messages: bool = True
    # A reply longer than one message continues in a thread started on its first part (guild channels).
    thread_long_replies: bool = False
    # 429s asking to wait longer than this (seconds, at least 30 in discord.py) are not waited out inside
    # the library: the stream editor gets them and keeps buffering instead.
    max_ratelimit_wait: float = Field(30.0, ge=30)
    # Attachments larger than this are not downloaded (the agent is told they were skipped).
    max_attachment_bytes: int = Field(25 * 1024 * 1024, ge=0)

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("api_base_url must be an http(s) URL such as https://discord.com/api/v10")
        return value.rstrip("/") if value is not None else None  # discord.py's paths start with "/"

    @field_validator("gateway_url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("gateway_url must be a ws(s) URL such as wss://gateway.discord.gg/")
        return value

    @model_validator(mode="after")
    def _token_when_enabled(self) -> DiscordConfig:
        if self.enabled and (self.token is None or not self.token.get_secret_value()):
            raise ValueError(
                "channels.discord.token is required when the channel is enabled "
                "(developer portal → your application → Bot → Reset Token)"
            )
        return self

    def allows(self, user_id: str, user_name: str | None = None, groups: list[str] | tuple[str, ...] = ()) -> bool:
        if super().allows(user_id, user_name, groups):
            return True
        granted = {f"role:{r}" for r in self.allow_roles} | {f"guild:{g}" for g in self.allow_guilds}
        return any(g in granted for g in groups)

    def policy_for(self, *ids: str | None) -> ReplyPolicy:
        """The reply policy of the first of `ids` (thread, channel, guild) that has an override."""
        for key in ids:
            if key is not None and key in self.reply_overrides:
                return self.reply_overrides[key]
        return self.guild_reply
