"""Pairing: an unknown sender in a direct chat gets a code; the owner approves it from the CLI.

    operator-use pairing list
    operator-use pairing approve K7P2WQ9D

Codes are 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), live `ttl` seconds (one
hour by default), and at most `max_pending` wait per channel, so a stranger cannot flood the owner.
Approved identities (channel + user id) are kept in `<home>/security/pairing.json`, shared with the
CLI through `JsonStore` (atomic writes, a lock, corruption reported, never ignored).

`request` is asked on every message of an unknown sender, so it answers from memory (the store's copy,
reloaded only when the file changed) unless a new code must be issued: a sender who is pending already,
approved, or refused because the channel is full costs no lock and no write.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .store import JsonStore

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def identity(channel: str, user_id: str) -> str:
    return f"{channel}:{user_id}"


@dataclass(frozen=True)
class PairingRequest:
    code: str
    channel: str
    user_id: str
    user_name: str | None
    created_at: float
    expires_at: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PairingRequest:
        return cls(
            str(d["code"]),
            str(d["channel"]),
            str(d["user_id"]),
            d.get("user_name"),
            float(d["created_at"]),
            float(d["expires_at"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "channel": self.channel,
            "user_id": self.user_id,
            "user_name": self.user_name,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


class PairingError(Exception):
    """An unknown or expired code (the message says which)."""


class PairingStore:
    def __init__(self, path: Path, *, ttl: float = 3600.0, max_pending: int = 3) -> None:
        self.store = JsonStore(path, "pairing requests and approved identities")
        self.ttl = ttl
        self.max_pending = max_pending

    @staticmethod
    def _pending(data: dict[str, Any], now: float) -> list[PairingRequest]:
        live = [PairingRequest.from_json(d) for d in data.get("pending", [])]
        return [r for r in live if r.expires_at > now]

    def _existing(
        self, data: dict[str, Any], pending: list[PairingRequest], channel: str, user_id: str
    ) -> tuple[PairingRequest | None, bool] | None:
        """The answer when no new code is due (approved, pending already, channel full), else None."""
        if identity(channel, user_id) in data.get("approved", {}):
            return None, False
        for r in pending:
            if r.channel == channel and r.user_id == user_id:
                return r, False
        if sum(1 for r in pending if r.channel == channel) >= self.max_pending:
            return None, False
        return None

    def request(
        self, channel: str, user_id: str, user_name: str | None = None, *, now: float | None = None
    ) -> tuple[PairingRequest | None, bool]:
        """(request, created): the sender's live request, a new one, or (None, False) when the channel
        already has `max_pending` requests waiting (or the sender is approved already)."""
        now = time.time() if now is None else now
        known = self.store.cached()
        answer = self._existing(known, self._pending(known, now), channel, user_id)
        if answer is not None:
            return answer

        def change(data: dict[str, Any]) -> tuple[PairingRequest | None, bool]:
            pending = self._pending(data, now)
            data["pending"] = [r.to_json() for r in pending]  # expired ones are dropped on every write
            answer = self._existing(data, pending, channel, user_id)
            if answer is not None:  # the CLI or another request got there between our look and the lock
                return answer
            taken = {r.code for r in pending}
            code = new_code()
            while code in taken:
                code = new_code()
            req = PairingRequest(code, channel, user_id, user_name, now, now + self.ttl)
            data["pending"].append(req.to_json())
            return req, True

        return self.store.update(change)

    def approve(self, code: str, *, now: float | None = None) -> PairingRequest:
        return self._resolve(code, approve=True, now=now)

    def deny(self, code: str, *, now: float | None = None) -> PairingRequest:
        return self._resolve(code, approve=False, now=now)

    def _resolve(self, code: str, *, approve: bool, now: float | None) -> PairingRequest:
        now = time.time() if now is None else now
        code = code.strip().upper()

        def change(data: dict[str, Any]) -> PairingRequest:
            everything = [PairingRequest.from_json(d) for d in data.get("pending", [])]
            match = next((r for r in everything if r.code == code), None)
            if match is None:
                raise PairingError(f"no pairing request with code {code}")
            if match.expires_at <= now:
                raise PairingError(
                    f"pairing code {code} has expired; the sender can message the agent again for a new one"
                )
            data["pending"] = [r.to_json() for r in everything if r.code != code and r.expires_at > now]
            if approve:
                data.setdefault("approved", {})[identity(match.channel, match.user_id)] = {
                    "user_name": match.user_name,
                    "approved_at": now,
                }
            return match

        return self.store.update(change)

    def revoke(self, channel: str, user_id: str) -> bool:
        def change(data: dict[str, Any]) -> bool:
            return data.setdefault("approved", {}).pop(identity(channel, user_id), None) is not None

        return self.store.update(change)

    def pending(self, *, now: float | None = None) -> list[PairingRequest]:
        return self._pending(self.store.snapshot(), time.time() if now is None else now)

    def approved(self) -> dict[str, dict[str, Any]]:
        return dict(self.store.snapshot().get("approved", {}))
