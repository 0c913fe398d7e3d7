"""Allow lists: `allow_from`/`admins` match platform user ids (and groups), `allow_names`/`admin_names` names.

The end-to-end proofs run through the real channels and their fakes (test_discord_channel.py,
test_twitch_channel.py, test_telegram_channel.py); these check the rule itself on every channel's config.
"""

from __future__ import annotations

import logging

import pytest

from operator_use.channels.base import ChannelConfig
from operator_use.channels.cli import LOCAL_USER, CLIConfig
from operator_use.channels.discord.config import DiscordConfig
from operator_use.channels.mqtt.config import MQTTConfig
from operator_use.channels.slack.config import SlackConfig
from operator_use.channels.telegram.config import TelegramConfig
from operator_use.channels.twitch.config import TwitchConfig
from operator_use.channels.web.config import WEB_USER, WebConfig


@pytest.mark.parametrize("cls", [ChannelConfig, TelegramConfig, DiscordConfig, TwitchConfig])
def test_a_name_equal_to_an_allowed_id_is_neither_allowed_nor_admin(cls: type[ChannelConfig]) -> None:
    config = cls(allow_from=["11"], admins=["11"])
    assert config.allows("11", "someone") and config.is_admin("11", "someone")
    assert not config.allows("66", "11") and not config.is_admin("66", "11")
    assert not config.allows("66", "@11") and not config.is_admin("66", "@11")


def test_names_match_only_their_own_fields_in_any_case_with_or_without_at() -> None:
    config = ChannelConfig(allow_from=["11"], allow_names=["@Carol", " dave "], admin_names=["CAROL"])
    assert config.allow_names == ["carol", "dave"] and config.admin_names == ["carol"]
    assert config.allows("13", "carol") and config.allows("13", "Carol") and config.allows("14", "@DAVE")
    assert config.is_admin("13", "carol") and not config.is_admin("14", "dave")
    # An id that reads like an allowed name is not that name, and no name is needed for an id.
    assert not config.allows("carol", None) and not config.is_admin("carol")
    assert not config.allows("15", None) and not config.allows("15", "mallory")


def test_groups_and_the_wildcard_still_open_the_door() -> None:
    config = ChannelConfig(allow_from=["role:4000"])
    assert config.allows("66", "mallory", ["guild:2000", "role:4000"])
    assert not config.allows("66", "role:4000")  # a name is not a group either
    assert ChannelConfig(allow_from=["*"]).allows("anyone", None)
    assert not ChannelConfig().allows("11", "11")  # deny by default
    discord = DiscordConfig(allow_roles=["4000"], allow_guilds=["2000"])
    assert discord.allows("66", None, ["role:4000"]) and discord.allows("67", None, ["guild:2000"])
    assert not discord.allows("66", "4000") and not discord.allows("66", "role:4000")
    twitch = TwitchConfig(allow_moderators=True)
    assert twitch.allows("77", "mod", ["role:moderator"]) and not twitch.allows("77", "role:moderator")


def test_fixed_identities_of_the_local_channels_and_slack_and_mqtt_ids() -> None:
    # The terminal and the web chat send fixed user ids ("local", "web-user"); the terminal's user name is
    # $USER, which must not matter.
    assert CLIConfig().allows(LOCAL_USER, "root") and CLIConfig().is_admin(LOCAL_USER, "root")
    assert not CLIConfig().allows("root", LOCAL_USER)
    assert WebConfig().allows(WEB_USER) and WebConfig().is_admin(WEB_USER)
    # Slack member ids and MQTT client topic levels are ids too (no numbers, no warning).
    assert SlackConfig(allow_from=["U012ABCDEF"]).allows("U012ABCDEF")
    assert MQTTConfig(allow_from=["kitchen-panel"]).allows("kitchen-panel")


@pytest.mark.parametrize("cls", [TelegramConfig, DiscordConfig, TwitchConfig])
def test_a_name_in_a_numeric_id_list_is_warned_about(
    cls: type[ChannelConfig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    cls(allow_from=["123", "-100456", "*", "role:4000", "guild:2000"], admins=["123"])
    assert caplog.records == []
    cls(allow_from=["@alice", "123"], admins=["bob"])
    section = cls.__name__.removesuffix("Config").lower()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert f"channels.{section}.allow_from: '@alice' is not a user id" in messages[0] and "allow_names" in messages[0]
    assert f"channels.{section}.admins: 'bob' is not a user id" in messages[1] and "admin_names" in messages[1]


def test_platforms_without_numeric_ids_are_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    SlackConfig(allow_from=["U012ABCDEF"], admins=["U012ABCDEF"])
    MQTTConfig(allow_from=["kitchen-panel"])
    CLIConfig()
    WebConfig()
    assert caplog.records == []
