"""Who may talk to this agent and who is an admin, beyond the channel's own `allow_from`/`admins`.

The orchestrator asks this object (after `refresh()`, once per message) whether a sender is an approved
pairing identity or a registered user whose role grants this agent, and whether that user's role is
admin. Both files are written by the CLI in another process, so `refresh` reloads them when they change
(parsing in a thread). A corrupt file is logged as an error and the last good copy
stays in force: it never silently turns into "nobody" or "everybody".
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..channels.base import ChannelConfig
from ..messages import IncomingMessage
from .config import RoleConfig, SecurityConfig
from .pairing import PairingStore, identity
from .store import StoreCorrupt
from .users import User, UserStore

log = logging.getLogger(__name__)

PAIRING_REPLY = (
    "Hi! I don't know you yet. To get access, ask the owner of this agent to run:\n\n"
    "operator-use pairing approve {code}\n\nThe code expires in {minutes} minutes."
)


def security_dir(home: Path) -> Path:
    return home / "security"


def pairing_store(home: Path, config: SecurityConfig) -> PairingStore:
    return PairingStore(
        security_dir(home) / "pairing.json", ttl=config.pairing_ttl, max_pending=config.pairing_max_pending
    )


def user_store(home: Path) -> UserStore:
    return UserStore(security_dir(home) / "users.json")


def grants(patterns: list[str] | str, name: str) -> bool:
    if patterns == "*":
        return True
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class Access:
    def __init__(
        self, home: Path, config: SecurityConfig, agent_name: str, channel_configs: Mapping[str, ChannelConfig]
    ) -> None:
        self.config = config
        self.agent_name = agent_name
        self.channel_configs = channel_configs
        self.pairing = pairing_store(home, config)
        self.users = user_store(home)
        self._approved: set[str] = set()
        self._by_identity: dict[str, User] = {}
        self._stamps: tuple[Any, Any] = (None, None)
        self._lock = asyncio.Lock()

    # --- loading ---

    def _stat(self) -> tuple[Any, Any]:
        try:
            return self.pairing.store.mtime(), self.users.store.mtime()
        except OSError as exc:  # unreadable directory: keep what we have, say why
            log.error("cannot check the access files: %s", exc)
            return self._stamps

    async def refresh(self) -> None:
        # Two stat() calls inline (microseconds, no await): the common case, nothing changed, does not
        # yield, so a message is routed as promptly as without this check. Loading runs in a thread.
        if self._stat() == self._stamps:
            return
        async with self._lock:
            stamps = self._stat()
            if stamps == self._stamps:
                return
            self._stamps = stamps  # a corrupt file is reported once per change, not on every message
            try:
                approved = await asyncio.to_thread(self.pairing.approved)
                self._approved = set(approved)
            except (StoreCorrupt, OSError) as exc:
                log.error("pairing approvals not reloaded, the previous ones stay in force: %s", exc)
            try:
                users = await asyncio.to_thread(self.users.list)
                self._by_identity = {i: u for u in users for i in u.identities}
            except (StoreCorrupt, OSError) as exc:
                log.error("users not reloaded, the previous ones stay in force: %s", exc)

    # --- questions the orchestrator and the tool policy ask ---

    def user(self, channel: str, user_id: str) -> User | None:
        return self._by_identity.get(identity(channel, user_id))

    def role(self, channel: str, user_id: str) -> RoleConfig | None:
        user = self.user(channel, user_id)
        if user is None:
            return None
        role = self.config.roles.get(user.role)
        if role is None:
            log.warning("user %s has role %r, which is not configured: no access", user.name, user.role)
        return role

    def allows(self, message: IncomingMessage) -> bool:
        return self.known(message.channel, message.user_id)

    def known(self, channel: str, user_id: str) -> bool:
        if identity(channel, user_id) in self._approved:
            return True
        role = self.role(channel, user_id)
        return role is not None and grants(role.agents, self.agent_name)

    async def knows(self, channel: str, user_id: str) -> bool:
        """`known` on fresh files: channels ask it (`Channel.knows`) before fetching a sender's attachments,
        ahead of the orchestrator's own refresh, so a sender the CLI has just approved gets their files in."""
        await self.refresh()
        return self.known(channel, user_id)

    def is_admin(self, message: IncomingMessage) -> bool:
        role = self.role(message.channel, message.user_id)
        return role is not None and role.admin and grants(role.agents, self.agent_name)

    def tools_for(self, channel: str, user_id: str) -> list[str] | str:
        """Tool patterns this sender's role allows ("*" when no role restricts them)."""
        role = self.role(channel, user_id)
        return role.tools if role is not None else "*"

    # --- unknown senders ---

    def offers_pairing(self, message: IncomingMessage) -> bool:
        config = self.channel_configs.get(message.channel)
        return config is not None and config.pairing and message.is_direct

    async def pairing_reply(self, message: IncomingMessage) -> str | None:
        """The text to send an unknown sender: a pairing code, once per code; None sends nothing.

        Store I/O in a thread, but callers still should not await it where allowed users wait: the
        orchestrator calls this from `Strangers`' background worker."""
        if not self.offers_pairing(message):
            return None
        try:
            request, created = await asyncio.to_thread(
                self.pairing.request, message.channel, message.user_id, message.user_name
            )
        except (StoreCorrupt, OSError) as exc:
            log.error("cannot issue a pairing code: %s", exc)
            return None
        if request is None:
            log.warning(
                "pairing request from %s:%s refused: %d codes already pending on %s",
                message.channel,
                message.user_id,
                self.pairing.max_pending,
                message.channel,
            )
            return None
        if not created:
            return None  # the code was sent already; repeating it on every message would spam
        log.warning(
            "pairing request %s from %s:%s (%s); approve with `operator-use pairing approve %s`",
            request.code,
            message.channel,
            message.user_id,
            message.user_name,
            request.code,
        )
        return PAIRING_REPLY.format(code=request.code, minutes=max(1, round(self.pairing.ttl / 60)))
