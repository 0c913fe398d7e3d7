"""Settings for approvals, pairing and roles. config.py imports this on every command: pydantic and the
prompt file names of agent/context.py only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..agent.context import MEMORY_FILE, PROMPT_FILES
from ..config_model import StrictModel

Verdict = Literal["allow", "ask", "deny"]


def _default_by_risk() -> dict[str, Verdict]:
    return {"low": "allow", "medium": "allow", "high": "ask"}


def _default_prompt_files() -> list[str]:
    # Every file the system prompt is built from, from the very list context.py reads, so the two cannot
    # drift apart; except the memory, which the agent is meant to write itself (as it grows its skills).
    return [name for name in PROMPT_FILES if name != MEMORY_FILE]


class ApprovalsConfig(StrictModel):
    """Which tools run freely, which wait for a person's /approve, which are refused (per agent).

    Names may be fnmatch patterns ("web_*"). The most restrictive list that names a tool wins
    (deny, then ask, then allow); a tool named nowhere gets the verdict of its risk level.
    """

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    # Reads and workspace writes are free; the shell and background processes need approval.
    by_risk: dict[str, Verdict] = Field(default_factory=lambda: _default_by_risk())
    # Seconds an approval request waits before it counts as denied.
    timeout: float = Field(300.0, gt=0, le=86_400)
    # Workspace files read into the system prompt of every later turn (names or fnmatch patterns relative
    # to the workspace, case-insensitive, judged after symlinks and '..' are resolved). A file tool writing
    # one gets `prompt_file_writes` on top of its own verdict (the stricter wins); "allow" turns this off.
    # Default: SOUL.md, RULES.md, AGENTS.md, CODE.md, USER.md (not memory/MEMORY.md nor skills/*/SKILL.md).
    prompt_files: list[str] = Field(default_factory=_default_prompt_files)
    prompt_file_writes: Verdict = "ask"

    @field_validator("prompt_files")
    @classmethod
    def _relative(cls, patterns: list[str]) -> list[str]:
        out = []
        for pattern in patterns:
            clean = pattern.strip().replace("\\", "/").removeprefix("./")
            if not clean or clean.startswith("/") or ".." in clean.split("/"):
                raise ValueError(f"prompt file {pattern!r} must be a path relative to the workspace")
            out.append(clean)
        return out


class RoleConfig(StrictModel):
    # May run admin commands (/restart) and approve anyone's tool calls.
    admin: bool = False
    # Agent names this role may talk to; "*" for all.
    agents: list[str] = Field(default_factory=lambda: ["*"])
    # Tool names (or patterns) this role's turns may use; "*" for every tool the agent has.
    tools: list[str] | Literal["*"] = "*"


def _default_roles() -> dict[str, RoleConfig]:
    return {"admin": RoleConfig(admin=True), "user": RoleConfig()}


class StrangersConfig(StrictModel):
    """How much unknown senders may cost. Their messages (answered with a pairing code or the channel's
    `rejection_message`) pass a token bucket per sender and one for all strangers together; the rest is
    ignored and counted in the log. Allowed users are never limited by this."""

    # Messages one stranger gets answered at once, then how many more per minute.
    per_sender_burst: int = Field(3, ge=1, le=1000)
    per_sender_per_minute: float = Field(1.0, gt=0, le=600)
    # The same for all strangers together.
    burst: int = Field(30, ge=1, le=100_000)
    per_second: float = Field(5.0, gt=0, le=10_000)
    # Answers waiting for the background worker; past this, stranger messages are dropped.
    queue: int = Field(100, ge=1, le=100_000)
    # Senders whose buckets are remembered (least recently seen forgotten first): bounds the memory.
    tracked_senders: int = Field(10_000, ge=10, le=10_000_000)


class SecurityConfig(StrictModel):
    roles: dict[str, RoleConfig] = Field(default_factory=_default_roles)
    # A pairing code's lifetime and how many may wait per channel.
    pairing_ttl: float = Field(3600.0, gt=0)
    pairing_max_pending: int = Field(3, ge=1, le=100)
    strangers: StrangersConfig = Field(default_factory=StrangersConfig)

    @field_validator("roles")
    @classmethod
    def _names(cls, roles: dict[str, RoleConfig]) -> dict[str, RoleConfig]:
        for name in roles:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"role name {name!r} must be letters, digits, '-' or '_'")
        # The built-in roles stay available (`user add --role admin`) unless redefined.
        return {**_default_roles(), **roles}
