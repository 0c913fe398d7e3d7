"""Tool approvals: a `before_tool` hook that lets a call run, refuses it, or asks the chat first.

The verdict for a tool comes from the agent's `approvals` config (deny > ask > allow lists, then the
tool's risk level) and from the sender's role (a role that does not grant a tool refuses it). A file
tool writing one of the `prompt_files` (SOUL.md, RULES.md...: the system prompt of every later turn)
gets the `prompt_file_writes` verdict too ("ask" by default), the stricter of the two winning. An "ask"
posts to the chat the turn came from the exact call (`preview.py`):

    Approve run_shell?
    ```
    rm -rf build/
    ```
    Reply /approve ab12 or /deny ab12 (expires in 5 min).

with Approve and Deny buttons under it where the channel shows buttons (a press is the presser's own
`/approve ab12`, so it is authorized exactly like the typed command), and waits. Only the user who owns
the turn, or an admin, may answer; silence past the timeout is a denial. Every decision is logged with who
made it. While the turn waits its conversation's lane is busy, which is fine: the orchestrator handles
commands at once, outside the lanes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..agent.tools import ToolError, ToolRegistry, ToolResult
from ..agent.turn import TurnContext
from ..messages import Button, CloseButtons, IncomingMessage, OutgoingMessage, TextPart, ToolCall
from ..orchestrator.commands import Command
from ..tools.filesystem import WRITES_PATH
from ..tools.paths import resolve_in_workspace
from . import preview as _preview
from .config import ApprovalsConfig, Verdict
from .prompt_files import PromptFiles, grant_writes

log = logging.getLogger(__name__)

_STRICTNESS: dict[Verdict, int] = {"allow": 0, "ask": 1, "deny": 2}


def _matches(patterns: list[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def verdict_for(config: ApprovalsConfig, tool: str, risk: str) -> Verdict:
    if _matches(config.deny, tool):
        return "deny"
    if _matches(config.ask, tool):
        return "ask"
    if _matches(config.allow, tool):
        return "allow"
    # An unknown risk level is treated as the highest: a typo must not make a tool free.
    return config.by_risk.get(risk, config.by_risk.get("high", "ask"))


def preview(call: ToolCall, redact: Callable[[str], str] | None = None, *, one_line: bool = False) -> str:
    """What the person approves: the exact command (shell-like tools) or arguments, escaped, with warnings.
    `one_line`: for a chat that shows a message on one line (whitespace shown as marks)."""
    return _preview.render(call, redact, one_line=one_line)


def buttons_for(request_id: str) -> list[Button]:
    """Approve/Deny under a request: a press is the presser's own `/approve ID` or `/deny ID`, authorized
    exactly as if typed."""
    return [
        Button(label="Approve", command=f"/approve {request_id}", style="primary"),
        Button(label="Deny", command=f"/deny {request_id}", style="danger"),
    ]


@dataclass
class PendingApproval:
    id: str
    tool: str
    preview: str
    channel: str
    user_id: str
    session_key: str
    # (approved, the name of who answered)
    decided: asyncio.Future[tuple[bool, str]] = field(repr=False)


class ApprovalGate:
    """The hook (`__call__`) plus the /approve and /deny command handlers. `multiline(channel)`: whether that
    channel shows line breaks and runs of spaces as sent (`Capabilities.multiline`); None: every channel does."""

    def __init__(
        self,
        config: ApprovalsConfig,
        registry: ToolRegistry,
        *,
        is_admin: Callable[[IncomingMessage], bool],
        tools_for: Callable[[str, str], list[str] | str] | None = None,
        multiline: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.is_admin = is_admin
        self.tools_for = tools_for
        self.multiline = multiline
        self.prompt_files = PromptFiles(tuple(config.prompt_files))
        self.pending: dict[str, PendingApproval] = {}

    # --- the hook ---

    async def __call__(self, ctx: TurnContext, call: ToolCall) -> ToolResult | None:
        tool = self.registry.get(call.name)
        if tool is None:
            return None  # the registry answers unknown tools itself
        if self.tools_for is not None:
            granted = self.tools_for(ctx.channel, ctx.user_id)
            if granted != "*" and not _matches(list(granted), call.name):
                log.warning(
                    "tool %s refused for %s:%s: not granted by the user's role", call.name, ctx.channel, ctx.user_id
                )
                return ToolResult(f"Error: {call.name} is not available to this user (role).", is_error=True)
        verdict = verdict_for(self.config, call.name, tool.risk)
        if verdict == "deny":
            log.warning("tool %s denied by policy in %s", call.name, ctx.session_key)
            return ToolResult(f"Error: {call.name} is not allowed by this agent's policy.", is_error=True)
        guarded = (
            call.name in WRITES_PATH and bool(self.prompt_files.patterns) and self.config.prompt_file_writes != "allow"
        )
        target = await self._prompt_target(ctx, call) if guarded else None
        reason = ""
        if target is not None:
            _path, name = target
            if self.config.prompt_file_writes == "deny":
                log.warning("tool %s denied in %s: it writes the prompt file %s", call.name, ctx.session_key, name)
                return ToolResult(
                    f"Error: {call.name} would change {name}, part of the system prompt; this agent's "
                    "policy does not allow that.",
                    is_error=True,
                )
            verdict = max(verdict, self.config.prompt_file_writes, key=_STRICTNESS.__getitem__)
            reason = f"It writes {name}, which is part of the agent's system prompt for every later turn."
        if verdict == "ask":
            refused = await self._ask(ctx, call, reason)
            if refused is not None:
                return refused
        if guarded:
            # What the tool may write among the prompt files: the approved target only (it checks again).
            grant_writes(self.prompt_files, {target[0]} if target is not None else set())
        return None

    async def _prompt_target(self, ctx: TurnContext, call: ToolCall) -> tuple[Path, str] | None:
        """(resolved path, prompt file name) when the call writes a prompt file, resolved as the tool will."""
        raw = call.arguments.get(WRITES_PATH[call.name])
        if not isinstance(raw, str):
            return None  # the tool refuses its own invalid arguments

        def find() -> tuple[Path, str] | None:
            try:
                path = resolve_in_workspace(ctx.workspace, raw, sandbox=False)  # to judge only; the tool confines
            except ToolError:
                return None  # an invalid path: the tool refuses it with the same error
            name = self.prompt_files.match(ctx.workspace, path)
            return (path, name) if name is not None else None

        return await asyncio.to_thread(find)

    def _new_id(self) -> str:
        while True:
            short = secrets.token_hex(2)
            if short not in self.pending:
                return short

    async def _ask(self, ctx: TurnContext, call: ToolCall, reason: str = "") -> ToolResult | None:
        if ctx.send_text is None:
            log.warning("tool %s needs approval but turn %s has no chat to ask in: refused", call.name, ctx.turn_id)
            return ToolResult(f"Error: {call.name} needs approval and there is no chat to ask in.", is_error=True)
        one_line = self.multiline is not None and not self.multiline(ctx.channel)
        shown = preview(call, self.registry.redact, one_line=one_line)  # the chat sees the call: secrets masked
        request = PendingApproval(
            self._new_id(),
            call.name,
            shown,
            ctx.channel,
            ctx.user_id,
            ctx.session_key,
            asyncio.get_running_loop().create_future(),
        )
        self.pending[request.id] = request
        minutes = self.config.timeout / 60
        expires = f"{minutes:.0f} min" if minutes >= 1 else f"{self.config.timeout:.0f} s"
        log.info(
            "approval %s requested in %s by %s:%s for %s: %r",
            request.id,
            ctx.session_key,
            ctx.channel,
            ctx.user_id,
            call.name,
            request.preview,
        )
        try:
            text = (
                f"Approve {call.name}?" + (f" {reason}" if reason else "") + f"\n{request.preview}\n"
                f"Reply /approve {request.id} or /deny {request.id} (expires in {expires})."
            )
            if ctx.send_message is not None:
                # The text still names the commands: for chats without buttons, and for people who type.
                await ctx.send_message(
                    OutgoingMessage(address=ctx.address, parts=[TextPart(text=text)], buttons=buttons_for(request.id))
                )
            else:
                await ctx.send_text(text)
            try:
                approved, who = await asyncio.wait_for(asyncio.shield(request.decided), self.config.timeout)
            except TimeoutError:
                log.info("approval %s for %s expired after %.0f s: denied", request.id, call.name, self.config.timeout)
                await ctx.send_text(f"Approval {request.id} expired: {call.name} was not run.")
                await self._close_buttons(ctx, request.id, f"Expired: {call.name} was not run.")
                return ToolResult(
                    f"Error: {call.name} was not approved in time, so it did not run. Do not retry "
                    "it unless the user asks.",
                    is_error=True,
                )
            except asyncio.CancelledError:
                # /stop or /new while it waited: the buttons go too (shielded: the turn is being cancelled).
                await asyncio.shield(self._close_buttons(ctx, request.id, f"Cancelled: {call.name} was not run."))
                raise
        finally:
            self.pending.pop(request.id, None)
        await self._close_buttons(ctx, request.id, f"Approved by {who}." if approved else f"Denied by {who}.")
        if approved:
            return None
        return ToolResult(
            f"Error: the user denied {call.name}; it did not run. Ask what they want instead.", is_error=True
        )

    @staticmethod
    async def _close_buttons(ctx: TurnContext, request_id: str, note: str) -> None:
        """The request's buttons stop being pressable where the channel can edit them, the outcome under its
        text; a late press elsewhere gets "No pending approval"."""
        if ctx.send_message is not None:
            commands = [b.command for b in buttons_for(request_id)]
            await ctx.send_message(CloseButtons(address=ctx.address, commands=commands, note=note))

    # --- the commands ---

    def _find(self, message: IncomingMessage, args: str) -> PendingApproval | str:
        wanted = args.split()[0].lower() if args.split() else ""
        if wanted:
            request = self.pending.get(wanted)
            return request if request is not None else f"No pending approval {wanted}."
        here = [r for r in self.pending.values() if r.session_key == message.key]
        if len(here) == 1:
            return here[0]
        return (
            "Nothing is waiting for approval here."
            if not here
            else "Several requests are waiting: " + ", ".join(r.id for r in here) + ". Name one."
        )

    async def _decide(self, message: IncomingMessage, command: Command, approve: bool) -> str:
        found = self._find(message, command.args)
        if isinstance(found, str):
            return found
        owner = message.channel == found.channel and message.user_id == found.user_id
        admin = self.is_admin(message)
        if not owner and not admin:
            log.warning(
                "approval %s: %s:%s tried to %s it but is neither the requester nor an admin",
                found.id,
                message.channel,
                message.user_id,
                "approve" if approve else "deny",
            )
            return "Only the person who asked, or an admin, can answer this request."
        who = f"{message.channel}:{message.user_id}" + ("" if owner else " (admin)")
        if found.decided.done():
            return f"Request {found.id} was already answered."
        found.decided.set_result((approve, message.user_name or message.user_id))
        log.info("approval %s for %s %s by %s", found.id, found.tool, "APPROVED" if approve else "DENIED", who)
        return (
            f"Approved {found.id}: running {found.tool}."
            if approve
            else f"Denied {found.id}: {found.tool} will not run."
        )

    async def approve(self, message: IncomingMessage, command: Command) -> str:
        return await self._decide(message, command, True)

    async def deny(self, message: IncomingMessage, command: Command) -> str:
        return await self._decide(message, command, False)
