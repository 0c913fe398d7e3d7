"""Users: stable names linked to identities on several platforms, each with a role.

    operator-use user add ada --role admin telegram 12345
    operator-use user link ada discord 999
    operator-use user list

A role (config `security.roles`) grants agents, tools and admin commands. Users live in
`<home>/security/users.json` (atomic writes, a lock shared with the running agent, corruption reported).
An identity belongs to at most one user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .store import JsonStore

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


class UserError(Exception):
    """A bad name, an unknown user or role, an identity already linked: the message says which."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    identities: tuple[str, ...] = field(default_factory=tuple)


def _identity(platform: str, user_id: str) -> str:
    platform, user_id = platform.strip(), user_id.strip()
    if not platform or not user_id or ":" in platform:
        raise UserError("an identity is a platform (channel name) and a user id, e.g. `telegram 12345`")
    return f"{platform}:{user_id}"


def _users(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return data.setdefault("users", {})


def _owner(data: dict[str, Any], ident: str) -> str | None:
    return next((n for n, u in _users(data).items() if ident in u.get("identities", [])), None)


class UserStore:
    def __init__(self, path: Path) -> None:
        self.store = JsonStore(path, "users and their identities")

    @staticmethod
    def parse(data: dict[str, Any]) -> list[User]:
        return [
            User(name, str(u.get("role", "user")), tuple(u.get("identities", [])))
            for name, u in sorted(data.get("users", {}).items())
        ]

    def list(self) -> list[User]:
        return self.parse(self.store.snapshot())

    def add(self, name: str, role: str, platform: str | None = None, user_id: str | None = None) -> User:
        if not _NAME.match(name):
            raise UserError(f"user name {name!r}: use 1-32 lowercase letters, digits, '.', '_' or '-'")
        ident = _identity(platform, user_id) if platform is not None and user_id is not None else None

        def change(data: dict[str, Any]) -> User:
            users = _users(data)
            if name in users:
                raise UserError(f"user {name!r} exists already; use `user link` or `user role`")
            if ident is not None and (owner := _owner(data, ident)) is not None:
                raise UserError(f"{ident} is already linked to user {owner!r}")
            users[name] = {"role": role, "identities": [ident] if ident else []}
            return User(name, role, (ident,) if ident else ())

        return self.store.update(change)

    def link(self, name: str, platform: str, user_id: str) -> User:
        ident = _identity(platform, user_id)

        def change(data: dict[str, Any]) -> User:
            user = _users(data).get(name)
            if user is None:
                raise UserError(f"no user {name!r}; create it with `user add`")
            owner = _owner(data, ident)
            if owner is not None and owner != name:
                raise UserError(f"{ident} is already linked to user {owner!r}")
            if owner is None:
                user.setdefault("identities", []).append(ident)
            return User(name, user["role"], tuple(user["identities"]))

        return self.store.update(change)

    def unlink(self, name: str, platform: str, user_id: str) -> User:
        ident = _identity(platform, user_id)

        def change(data: dict[str, Any]) -> User:
            user = _users(data).get(name)
            if user is None or ident not in user.get("identities", []):
                raise UserError(f"{ident} is not linked to user {name!r}")
            user["identities"].remove(ident)
            return User(name, user["role"], tuple(user["identities"]))

        return self.store.update(change)

    def set_role(self, name: str, role: str) -> User:
        def change(data: dict[str, Any]) -> User:
            user = _users(data).get(name)
            if user is None:
                raise UserError(f"no user {name!r}")
            user["role"] = role
            return User(name, role, tuple(user.get("identities", [])))

        return self.store.update(change)

    def remove(self, name: str) -> None:
        def change(data: dict[str, Any]) -> None:
            if _users(data).pop(name, None) is None:
                raise UserError(f"no user {name!r}")

        self.store.update(change)
