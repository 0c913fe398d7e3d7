"""What the security and session-bound tools add to an App, in two steps around the orchestrator:
`Protection(...)` before the tools are built (their shared runtime), `attach(...)` once the orchestrator
exists (access checks, the approval hook and its commands, ask_user's interceptor, stopping a
conversation's processes on /stop and /new)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..agent.hooks import Hooks
from ..agent.tools import ToolRegistry
from ..bus.base import Bus
from ..channels.base import Channel, ChannelConfig
from ..session.store import SessionStore
from ..tools import ToolRuntime
from ..tools.ask_user import AskUser
from ..tools.messaging import Messenger
from ..tools.processes import ProcessManager
from ..tools.sandbox import Isolation
from .access import Access
from .approvals import ApprovalGate
from .redact import install_log_redaction, secret_values

if TYPE_CHECKING:
    from ..config import Config
    from ..orchestrator.orchestrator import Orchestrator


class Protection:
    def __init__(
        self, config: Config, bus: Bus, sessions: SessionStore, channel_configs: Mapping[str, ChannelConfig]
    ) -> None:
        self.config = config
        self.redactor = install_log_redaction(secret_values(config))
        isolation = Isolation(config.tools.shell, hide=(config.home,))
        self.processes = ProcessManager(config.tools.processes, isolation)
        self.asks = AskUser(config.tools.ask_timeout)
        self.messenger = Messenger(
            bus,
            channel_configs,
            sessions,
            sandbox=config.agent.sandbox,
            max_file_bytes=config.tools.send_file_max_bytes,
        )
        self.runtime = ToolRuntime(isolation, self.processes, self.asks, self.messenger)
        self.access = Access(config.home, config.security, config.agent.name, channel_configs)
        self.gate: ApprovalGate | None = None

    def attach(
        self, orchestrator: Orchestrator, registry: ToolRegistry, hooks: Hooks, *, channels: Mapping[str, Channel]
    ) -> None:
        registry.redact = self.redactor
        orchestrator.access = self.access

        def multiline(name: str) -> bool:  # read when asking: a channel's capabilities may change
            channel = channels.get(name)
            return channel is not None and channel.capabilities.multiline  # unknown: the one-line form, safe anywhere

        self.gate = ApprovalGate(
            self.config.agent.approvals,
            registry,
            is_admin=orchestrator.is_admin,
            tools_for=self.access.tools_for,
            multiline=multiline,
        )
        hooks.before_tool.insert(0, self.gate)  # policy first: no other hook runs for a refused call
        orchestrator.commands.register(
            "approve", "let a tool call waiting for approval run: /approve ID", self.gate.approve
        )
        orchestrator.commands.register("deny", "refuse a tool call waiting for approval: /deny ID", self.gate.deny)
        orchestrator.interceptors.append(self.asks.intercept)
        orchestrator.on_session_end.append(self.processes.stop_session)

    async def close(self) -> None:
        await self.processes.close()
