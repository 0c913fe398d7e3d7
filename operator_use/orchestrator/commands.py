"""Session commands, parsed once for every channel: `/cmd`, `/cmd@botname args`, and `!stop`, each at the
very start of the message.

Commands live in a registry so features add their own (`/voice`, `/approve`, ...) without touching the
orchestrator. Every command is authorized like a message; `admin=True` ones also need the admin role.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ..messages import IncomingMessage


@dataclass(frozen=True)
class Command:
    name: str
    args: str = ""
    # The @botname it was addressed to, if any.
    target: str | None = None


# Returns the reply text, or None to send nothing.
CommandHandler = Callable[[IncomingMessage, Command], Awaitable[str | None]]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    description: str
    handler: CommandHandler
    admin: bool = False


_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@(\S+))?(?:\s+(.*))?$", re.DOTALL)


def parse_command(text: str) -> Command | None:
    # Only a message that starts with the command is one, as on Telegram: " /new@otherbot" is text, so it
    # can neither slip past a channel's check of who a command is addressed to nor end a conversation.
    stripped = text.rstrip()
    if stripped.lower() == "!stop":
        return Command("stop")
    match = _COMMAND.match(stripped)
    if not match:
        return None
    name, target, args = match.groups()
    return Command(name.lower(), (args or "").strip(), target)


# Speech recognizers write a spoken command as "Slash new.", "/new." or "Slash, voice off!".
_SPOKEN = re.compile(r"^\s*(?:slash|/)[\s,.\-]*([A-Za-z][A-Za-z0-9_]*)\b[\s,.:;!?\-]*(.*)$", re.IGNORECASE | re.DOTALL)


def parse_spoken_command(transcript: str, known: Iterable[str]) -> Command | None:
    """A voice note that says a command. Only registered names count: speech has no other way to mark
    a command, and "slash is a guitarist" must stay a message."""
    match = _SPOKEN.match(transcript)
    if not match or match.group(1).lower() not in set(known):
        return None
    return Command(match.group(1).lower(), match.group(2).strip().rstrip(".!?").strip())


class CommandRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def register(self, name: str, description: str, handler: CommandHandler, *, admin: bool = False) -> None:
        self._specs[name.lower()] = CommandSpec(name.lower(), description, handler, admin)

    def get(self, name: str) -> CommandSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return list(self._specs)

    def menu(self) -> list[tuple[str, str]]:
        """(name, description) of the commands everyone may use, for platform command menus."""
        return [(s.name, s.description) for s in self._specs.values() if not s.admin]

    def help_text(self, *, admin: bool = True) -> str:
        lines = [
            f"/{s.name} - {s.description}" + (" (admins only)" if s.admin else "")
            for s in self._specs.values()
            if admin or not s.admin
        ]
        return "Commands:\n" + "\n".join(lines)
