"""run_shell: one shell command in the workspace, bounded in time, output and reach.

- The command is contained (jobs.py: a PID namespace in the sandbox and, without it, as root; a subreaper
  otherwise), so exit, timeout and cancellation end everything it started, even a process that called
  setsid (SIGTERM, a grace period, then SIGKILL): nothing left in the background outlives the call.
- Output goes to a pipe we create ourselves rather than asyncio's PIPE: asyncio's Process.wait() also
  waits for its pipes to close, which a background child holding stdout would delay until the timeout.
- Only the first and last 16 KB of output are kept, whatever the command prints.
- The environment is scrubbed of anything that looks like a credential of the agent itself.

Without isolation this tool is NOT confined to the workspace: cwd is the workspace, but the command can
touch anything the host user can (it runs without capabilities, so a root agent's command cannot read the
agent's own /proc entries, but it still owns root's files and /proc/sys). With `tools.shell.isolation`
(sandbox.py, bubblewrap) the host is read-only, the network is cut, and a root agent's command runs as
`nobody`. Either way its risk is "high": it needs approval by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field, create_model

from ..agent.tools import Tool, ToolError
from ..agent.turn import TurnContext
from . import jobs
from .jobs import Job, start_job
from .sandbox import Isolation

OUTPUT_HEAD = OUTPUT_TAIL = 16 * 1024
DEFAULT_TIMEOUT, MAX_TIMEOUT = 60, 600
DRAIN_GRACE = 0.5  # after the shell exits, how long background writers may keep the pipe open

_SECRET_WORDS = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
)
_URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")  # DATABASE_URL=postgres://user:pw@host


def _looks_secret(name: str, value: str) -> bool:
    upper = name.upper()
    return (
        upper.startswith("OPERATOR_")
        or any(w in upper for w in _SECRET_WORDS)
        or bool(_URL_WITH_PASSWORD.search(value))
    )


def scrubbed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of environ without variables that look like secrets (PATH, HOME, LANG... stay)."""
    return {k: v for k, v in environ.items() if not _looks_secret(k, v)}


class _Capture(asyncio.Protocol):
    """Pipe reader that keeps the head and the tail of the output: memory stays bounded."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        room = OUTPUT_HEAD - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * OUTPUT_TAIL:  # trim in batches, not on every chunk
                del self.tail[:-OUTPUT_TAIL]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def text(self) -> str:
        tail = self.tail[-OUTPUT_TAIL:]
        omitted = self.total - len(self.head) - len(tail)
        out = self.head.decode("utf-8", errors="replace")
        if omitted:
            out += f"\n[... {omitted} bytes omitted ...]\n"
        return out + tail.decode("utf-8", errors="replace")


class RunShellParams(BaseModel):
    command: str = Field(description="Shell command line, run with /bin/sh in the workspace directory.")
    timeout: int = Field(DEFAULT_TIMEOUT, ge=1, le=MAX_TIMEOUT, description="Seconds before the command is killed.")


async def spawn(
    command: str, workspace: Path, isolation: Isolation | None, stdout: int, *, report: bool = False
) -> Job:
    """Start `command` with /bin/sh, contained (jobs.py), under bwrap when configured."""
    prefix = await isolation.prefix(workspace) if isolation is not None else []
    return await start_job(prefix, command, workspace, scrubbed_env(os.environ), stdout, report=report)


async def spawn_piped(
    command: str, workspace: Path, isolation: Isolation | None, *, report: bool = False
) -> tuple[Job, int]:
    """`spawn` with stdout+stderr on a pipe of our own; returns the job and the pipe's read end.

    Our own pipe, not asyncio's: Process.wait() would otherwise also wait for background children
    that keep the pipe open."""
    if not await asyncio.to_thread(os.path.isdir, workspace):
        raise ToolError(f"workspace {workspace} does not exist")
    rfd, wfd = os.pipe()
    try:
        job = await spawn(command, workspace, isolation, wfd, report=report)
    except OSError as exc:
        os.close(rfd)
        raise ToolError(f"could not start the command: {exc}") from None
    except BaseException:
        os.close(rfd)
        raise
    finally:
        os.close(wfd)  # the child has its copy; ours would keep the pipe from ever reaching EOF
    return job, rfd


async def _run_shell(ctx: TurnContext, p: RunShellParams, isolation: Isolation | None = None) -> str:
    loop = asyncio.get_running_loop()
    job, rfd = await spawn_piped(p.command, ctx.workspace, isolation, report=True)
    proc = job.proc
    done: asyncio.Future[None] = loop.create_future()
    capture = _Capture(done)
    pipe = os.fdopen(rfd, "rb", buffering=0)
    transport = None
    timed_out = leftovers = False
    try:
        transport, _ = await loop.connect_read_pipe(lambda: capture, pipe)
        try:
            await asyncio.wait_for(proc.wait(), p.timeout)
        except TimeoutError:
            timed_out = True
        else:
            await asyncio.wait({done}, timeout=DRAIN_GRACE)  # let output in flight arrive
    finally:
        try:
            # Exit, timeout or cancellation: nothing started by the command outlives the call.
            leftovers = await job.stop()
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):  # stuck in the kernel (D state): don't hang
                    await asyncio.wait_for(proc.wait(), jobs.KILL_GRACE)
            leftovers = leftovers or job.stopped_leftovers()
            if leftovers or timed_out:  # killed writers: let the pipe reach EOF.
                await asyncio.wait({done}, timeout=DRAIN_GRACE)
        finally:
            job.close()
            if transport is not None:
                transport.close()
            else:
                pipe.close()

    out = capture.text().rstrip("\n") or "(no output)"
    rc = proc.returncode
    if timed_out:
        status = f"[timed out after {p.timeout} s; the command and its child processes were killed]"
    elif rc is not None and rc < 0:
        try:
            status = f"[killed by signal {signal.Signals(-rc).name}]"
        except ValueError:
            status = f"[killed by signal {-rc}]"
    else:
        status = f"[exit code {rc}]"
    if leftovers and not timed_out:
        status += " [processes still running in the background were stopped]"
    return f"{out}\n{status}"


def shell_tools(default_timeout: int = DEFAULT_TIMEOUT, isolation: Isolation | None = None) -> list[Tool]:
    params = RunShellParams
    if default_timeout != DEFAULT_TIMEOUT:
        # The configured default (agent.shell_timeout) is what the model sees in the schema.
        default_timeout = min(max(1, default_timeout), MAX_TIMEOUT)
        params = create_model(
            "RunShellParams",
            __base__=RunShellParams,
            timeout=(
                int,
                Field(default_timeout, ge=1, le=MAX_TIMEOUT, description="Seconds before the command is killed."),
            ),
        )
    return [
        Tool(
            "run_shell",
            "Run a shell command (/bin/sh) in the workspace directory. Returns combined "
            f"stdout/stderr (first and last {OUTPUT_HEAD // 1024} KB) and the exit code. There is no stdin. "
            f"Timeout defaults to {default_timeout} s (max {MAX_TIMEOUT}); processes left running in the "
            "background are stopped when the command returns."
            + (
                " It may run in a sandbox: read-only outside the workspace, no network unless configured."
                if isolation is not None and isolation.config.isolation != "off"
                else ""
            ),
            params,
            functools.partial(_run_shell, isolation=isolation),
            risk="high",
            max_output=OUTPUT_HEAD + OUTPUT_TAIL + 1024,
        ),
    ]
