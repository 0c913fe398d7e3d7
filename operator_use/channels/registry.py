"""Which channel class serves which config section; platform modules are imported only when enabled."""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import Channel

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

# config section -> "module:Class"
CHANNELS: dict[str, str] = {
    # web before cli: it prints its address before the terminal prints its prompt.
    "web": "operator_use.channels.web.channel:WebChannel",
    "cli": "operator_use.channels.cli:TerminalChannel",
    "discord": "operator_use.channels.discord.channel:DiscordChannel",
    "mqtt": "operator_use.channels.mqtt.channel:MQTTChannel",
    "slack": "operator_use.channels.slack.channel:SlackChannel",
    "twitch": "operator_use.channels.twitch.channel:TwitchChannel",
    "telegram": "operator_use.channels.telegram.channel:TelegramChannel",
}


def build_channels(
    config: Config, *, on_eof: Callable[[], None] | None = None, only: list[str] | None = None
) -> list[Channel]:
    channels: list[Channel] = []
    for name, target in CHANNELS.items():
        section = getattr(config.channels, name, None)
        if section is None or (only is None and not section.enabled) or (only is not None and name not in only):
            continue
        module_name, class_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        kwargs: dict[str, object] = {"on_eof": on_eof} if name == "cli" else {}
        if "workspace" in inspect.signature(cls).parameters:
            kwargs["workspace"] = config.workspace  # where the channel saves received files
        channels.append(cls(section, **kwargs))
    return channels
