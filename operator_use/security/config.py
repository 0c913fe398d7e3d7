"""Settings for approvals, pairing and roles. Pure pydantic: config.py imports this on every command."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

Verdict = Literal["allow", "ask", "deny"]


class ApprovalsConfig(BaseModel):
    """Which tools run freely, which wait for a person's /approve, which are refused (per agent).

    Names may be fnmatch patterns ("web_*"). The most restrictive list that names a tool wins
    (deny, then ask, then allow); a tool named nowhere gets the verdict of its risk level.
    """

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    # Reads and workspace writes are free; the shell and background processes need approval.
    by_risk: dict[str, Verdict] = Field(default_factory=lambda: {"low": "allow", "medium": "allow", "high": "ask"})
    # Seconds an approval request waits before it counts as denied.
    timeout: float = Field(300.0, gt=0, le=86_400)


class RoleConfig(BaseModel):
    # May run admin commands (/restart) and approve anyone's tool calls.
    admin: bool = False
    # Agent names this role may talk to; "*" for all.
    agents: list[str] = Field(default_factory=lambda: ["*"])
    # Tool names (or patterns) this role's turns may use; "*" for every tool the agent has.
    tools: list[str] | Literal["*"] = "*"


def _default_roles() -> dict[str, RoleConfig]:
    return {"admin": RoleConfig(admin=True), "user": RoleConfig()}


class SecurityConfig(BaseModel):
    roles: dict[str, RoleConfig] = Field(default_factory=_default_roles)
    # A pairing code's lifetime and how many may wait per channel.
    pairing_ttl: float = Field(3600.0, gt=0)
    pairing_max_pending: int = Field(3, ge=1, le=100)

    @field_validator("roles")
    @classmethod
    def _names(cls, roles: dict[str, RoleConfig]) -> dict[str, RoleConfig]:
        for name in roles:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"role name {name!r} must be letters, digits, '-' or '_'")
        # The built-in roles stay available (`user add --role admin`) unless redefined.
        return {**_default_roles(), **roles}
