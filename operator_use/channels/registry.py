"""Which channel class serves which config section, and which optional extra its platform SDK comes from.

Platform modules are imported only when enabled. What each channel needs installed lives here, once:
`run` refuses to start without it (`MissingExtras`, with the install command) and `doctor` reports it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Needs:
    """A channel's optional extra (pyproject.toml's [project.optional-dependencies]) and the top-level
    modules it must make importable."""

    extra: str
    package: str  # what the user would recognise in pip's output
    modules: tuple[str, ...]


NEEDS: dict[str, Needs] = {
    "web": Needs("web", "aiohttp", ()),  # core dependencies only
    "cli": Needs("", "", ()),
    "telegram": Needs("telegram", "python-telegram-bot", ("telegram", "aiolimiter")),
    "discord": Needs("discord", "discord.py", ("discord", "yarl")),
    "slack": Needs("slack", "slack-bolt", ("slack_bolt", "slack_sdk")),
    "twitch": Needs("twitch", "twitchio", ("twitchio",)),
    "mqtt": Needs("mqtt", "aiomqtt", ("aiomqtt", "paho")),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-removed package
        return False


def missing_modules(channel: str) -> list[str]:
    needs = NEEDS.get(channel)
    return [m for m in needs.modules if not installed(m)] if needs else []


def extra_for_module(module: str) -> tuple[str, str] | None:
    """(channel, extra) whose SDK provides `module` (a dotted name counts by its top level)."""
    top = module.split(".")[0]
    for channel, needs in NEEDS.items():
        if top in needs.modules:
            return channel, needs.extra
    return None


def install_command(extras: Iterable[str]) -> str:
    wanted = sorted({e for e in extras if e})
    make = ",".join(["web", *(e for e in wanted if e != "web")])
    return f"pip install 'operator-use[{','.join(wanted)}]' (with the Makefile: make run EXTRAS={make})"


class MissingExtras(Exception):
    """Enabled channels whose platform SDK is not installed; the message gives the install command."""

    def __init__(self, missing: dict[str, list[str]]) -> None:
        self.missing = missing
        names = "; ".join(f"{ch} needs {NEEDS[ch].package} (module {', '.join(mods)})" for ch, mods in missing.items())
        super().__init__(
            f"Enabled channel{'s' if len(missing) > 1 else ''} without {'their' if len(missing) > 1 else 'its'} "
            f"optional extra: {names}. Install it: {install_command(NEEDS[ch].extra for ch in missing)}; "
            "or disable the channel in config.yaml."
        )


def enabled_names(config: Config, only: list[str] | None = None) -> list[str]:
    names = []
    for name in CHANNELS:
        section = getattr(config.channels, name, None)
        if section is None or (only is None and not section.enabled) or (only is not None and name not in only):
            continue
        names.append(name)
    return names


def check_extras(config: Config, only: list[str] | None = None) -> None:
    """Raise MissingExtras when an enabled channel's SDK is not importable (checked, not imported)."""
    missing = {name: mods for name in enabled_names(config, only) if (mods := missing_modules(name))}
    if missing:
        raise MissingExtras(missing)


def build_channels(
    config: Config, *, on_eof: Callable[[], None] | None = None, only: list[str] | None = None
) -> list[Channel]:
    check_extras(config, only)
    channels: list[Channel] = []
    for name in enabled_names(config, only):
        target, section = CHANNELS[name], getattr(config.channels, name)
        module_name, class_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        kwargs: dict[str, object] = {"on_eof": on_eof} if name == "cli" else {}
        if "workspace" in inspect.signature(cls).parameters:
            kwargs["workspace"] = config.workspace  # where the channel saves received files
        if "home" in inspect.signature(cls).parameters:
            kwargs["home"] = config.home  # where the channel keeps its own state (the terminal's input history)
        channels.append(cls(section, **kwargs))
    return channels
