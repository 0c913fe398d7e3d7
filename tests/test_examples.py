"""Every starter file in examples/ loads as the configuration it claims to be, so none can rot: a renamed or
removed setting fails here (unknown keys are errors), not in a user's first run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from operator_use.config import load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHANNEL_OF = {
    "telegram.yaml": "telegram",
    "discord.yaml": "discord",
    "slack.yaml": "slack",
    "twitch.yaml": "twitch",
    "mqtt.yaml": "mqtt",
    "web.yaml": "web",
    "local-model.yaml": "web",
}


def test_there_is_an_example_for_each_channel_and_a_local_model() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(CHANNEL_OF)


@pytest.mark.parametrize("name", sorted(CHANNEL_OF))
def test_example_loads(name: str, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    shutil.copy(EXAMPLES / name, home / "config.yaml")  # `home` is OPERATOR_HOME
    caplog.set_level(logging.WARNING)
    config = load_config()
    enabled = {
        n for n in ("telegram", "discord", "slack", "twitch", "mqtt", "web") if getattr(config.channels, n).enabled
    }
    assert enabled == {CHANNEL_OF[name]}
    section = getattr(config.channels, CHANNEL_OF[name])
    assert section.allow_from, "deny by default: an example names who may talk"
    assert config.llm.provider and config.llm.model
    assert caplog.records == []  # no "not a user id" warning: the placeholders are of the right kind
    text = (EXAMPLES / name).read_text()
    assert text.startswith("# ") and "config.yaml" in text  # commented, and says where it goes
