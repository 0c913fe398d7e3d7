"""An App built from configuration sections (tools from `agent.tools`, approvals, security...), for the
end-to-end tests of tools and access control. Unlike `make_app`, the tools come from the config unless
given, so the real wiring (builtin tools, approval hook, interceptors, session-end callbacks) is tested."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from operator_use.agent.tools import Tool
from operator_use.app import App
from operator_use.config import load_config

from .chat import ChatChannel
from .pipeline import TappedBus


def build_app(
    home: Path, channel: ChatChannel, llm: Any, *, given_tools: list[Tool] | None = None, **sections: Any
) -> App:
    """`sections` are configuration sections (agent=, tools=, security=...); `given_tools` replaces the
    built-in tools like App(tools=...) does."""
    agent = {"workspace": home / "workspace", **sections.pop("agent", {})}
    tools_section = sections.pop("tools", {})
    # Tests run the shell without bubblewrap unless they ask for it (test_shell_sandbox.py does).
    tools_section.setdefault("shell", {"isolation": "off"})
    config = load_config(home=home, agent=agent, tools=tools_section, **sections)
    (home / "workspace").mkdir(parents=True, exist_ok=True)
    return App(config, channels=[channel], llm=llm, tools=given_tools, bus=TappedBus())


APPROVAL_ID = re.compile(r"/approve ([0-9a-f]{4})")


def approval_id(texts: list[str]) -> str | None:
    for text in texts:
        match = APPROVAL_ID.search(text)
        if match:
            return match.group(1)
    return None
