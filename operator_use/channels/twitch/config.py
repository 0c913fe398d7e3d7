"""Settings of the Twitch channel (no SDK import: the configuration loads without twitchio)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from ..base import ChannelConfig


class TwitchConfig(ChannelConfig):
    numeric_ids = True  # allow_from/admins: user ids; logins go in allow_names/admin_names
    client_id: str = ""
    client_secret: SecretStr | None = None  # needed for app tokens and to refresh the user token
    # The bot account's user token (scopes user:read:chat, user:write:chat, user:bot; whispers:
    # user:read:whispers, user:manage:whispers) and its refresh token. Refreshed tokens stay in memory.
    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    bot_id: str | None = None  # checked against the token's user when set
    channels: list[str] = Field(default_factory=list)  # logins or numeric ids of the chats to join
    prefix: str | None = "!ai"  # a message starting with it is for the bot
    answer_mentions: bool = True  # so is a message mentioning @bot
    whispers: bool = False
    per_user_sessions: bool = False  # one conversation per user in a channel, instead of one per channel
    allow_moderators: bool = False  # moderators (and the broadcaster) of a joined channel may talk to it
    # Twitch: 20 messages per 30 s for a bot that is no moderator (100 where it is one everywhere it talks),
    # counted for the account across all its chats; paced per chat and for the account (limits.py).
    rate_messages: int = Field(20, ge=1)
    rate_window: float = Field(30.0, gt=0)
    # Seconds added to rate_window when we pace our sends: Twitch counts messages when they arrive, and
    # network jitter can bring two sends a full window apart closer together there.
    rate_margin: float = Field(1.0, ge=0)
    oauth_port: int | None = Field(None, ge=1, le=65535)  # twitchio's OAuth web adapter on localhost
    # Process-wide twitchio endpoints, for tests and proxies (with the trailing slash twitchio expects).
    api_url: str | None = None  # https://api.twitch.tv/helix/
    id_url: str | None = None  # https://id.twitch.tv/
    eventsub_url: str | None = None  # wss://eventsub.wss.twitch.tv/ws

    @model_validator(mode="after")
    def _complete(self) -> TwitchConfig:
        if self.enabled and (not self.client_id or self.access_token is None):
            raise ValueError("an enabled Twitch channel needs client_id and access_token")
        return self

    def allows(self, user_id: str, user_name: str | None = None, groups: list[str] | tuple[str, ...] = ()) -> bool:
        return super().allows(user_id, user_name, groups) or (self.allow_moderators and "role:moderator" in groups)
