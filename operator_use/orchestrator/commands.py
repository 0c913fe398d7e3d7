"""Session commands, parsed once for every channel: `/cmd`, `/cmd@botname args`, and `!stop`."""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMANDS: dict[str, str] = {
    "start": "say hello",
    "help": "list the commands",
    "status": "show the agent's state",
    "stop": "cancel the running reply (also: !stop)",
    "new": "archive this conversation and start a fresh one",
    "restart": "restart the agent (admins only)",
}
ADMIN_COMMANDS = frozenset({"restart"})

_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@(\S+))?(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True)
class Command:
    name: str
    args: str = ""
    # The @botname it was addressed to, if any.
    target: str | None = None


def parse_command(text: str) -> Command | None:
    stripped = text.strip()
    if stripped.lower() == "!stop":
        return Command("stop")
    match = _COMMAND.match(stripped)
    if not match:
        return None
    name, target, args = match.groups()
    return Command(name.lower(), (args or "").strip(), target)


def help_text() -> str:
    return "Commands:\n" + "\n".join(f"/{name} - {desc}" for name, desc in COMMANDS.items())
