"""Background processes: start a long-running command, read its output, stop it.

Each process is contained like run_shell's commands (jobs.py): everything it starts, even a process
that called setsid, ends with it, when its shell exits or when it is stopped. It writes into a bounded ring
buffer (only the most recent `buffer_bytes` are kept), and belongs to the conversation that started it:
another chat cannot see or stop it. `/stop` and `/new` stop every process of their conversation (the
orchestrator's `on_session_end` callbacks), and shutting the agent down stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from ..agent.tools import Tool, ToolError
from ..agent.turn import TurnContext
from . import jobs
from .config import ProcessesConfig
from .jobs import Job
from .sandbox import Isolation
from .shell import spawn_piped

log = logging.getLogger(__name__)

READ_MAX = 16 * 1024  # bytes one read_process call returns


class RingBuffer(asyncio.Protocol):
    """Pipe reader keeping the last `size` bytes; offsets count every byte ever received."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.total = 0
        self.closed = asyncio.Event()
        self.grew = asyncio.Event()

    def data_received(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        if len(self.data) > 2 * self.size:  # trim in batches
            del self.data[: len(self.data) - self.size]
        self.grew.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.grew.set()

    def since(self, offset: int, limit: int = READ_MAX) -> tuple[bytes, int, int]:
        """(bytes from `offset`, the new offset, bytes lost because the buffer had moved past offset)."""
        kept = self.data[-self.size :]
        start = self.total - len(kept)
        lost = max(0, start - offset)
        chunk = bytes(kept[max(0, offset - start) :])
        if len(chunk) > limit:  # keep the newest part
            lost += len(chunk) - limit
            chunk = chunk[-limit:]
        return chunk, self.total, lost


@dataclass
class BackgroundProcess:
    id: str
    command: str
    session_key: str
    job: Job
    buffer: RingBuffer
    transport: asyncio.BaseTransport | None
    started_at: float = field(default_factory=time.time)
    cursor: int = 0
    watcher: asyncio.Task[None] | None = None

    @property
    def proc(self) -> asyncio.subprocess.Process:
        return self.job.proc

    @property
    def pgid(self) -> int:
        return self.job.pgid

    def status(self) -> str:
        rc = self.proc.returncode
        if rc is None:
            return f"running for {time.time() - self.started_at:.0f} s"
        return f"exited with code {rc}" if rc >= 0 else f"killed by signal {-rc}"


class ProcessManager:
    def __init__(self, config: ProcessesConfig | None = None, isolation: Isolation | None = None) -> None:
        self.config = config or ProcessesConfig()
        self.isolation = isolation
        self._sessions: dict[str, dict[str, BackgroundProcess]] = {}
        self._counter = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception():
            log.error("background process task %s failed", task.get_name(), exc_info=task.exception())

    def of(self, session_key: str) -> dict[str, BackgroundProcess]:
        return self._sessions.get(session_key, {})

    def _get(self, ctx: TurnContext, pid: str) -> BackgroundProcess:
        bp = self.of(ctx.session_key).get(pid.strip())
        if bp is None:
            known = ", ".join(self.of(ctx.session_key)) or "none"
            raise ToolError(f"no background process {pid!r} in this conversation (running: {known})")
        return bp

    async def start(self, ctx: TurnContext, command: str) -> BackgroundProcess:
        mine = self.of(ctx.session_key)
        if sum(1 for p in mine.values() if p.proc.returncode is None) >= self.config.max_per_session:
            raise ToolError(
                f"this conversation already runs {self.config.max_per_session} background processes; stop one first"
            )
        loop = asyncio.get_running_loop()
        job, rfd = await spawn_piped(command, ctx.workspace, self.isolation)
        buffer = RingBuffer(self.config.buffer_bytes)
        transport, _ = await loop.connect_read_pipe(lambda: buffer, os.fdopen(rfd, "rb", buffering=0))
        self._counter += 1
        bp = BackgroundProcess(f"p{self._counter}", command, ctx.session_key, job, buffer, transport)
        self._sessions.setdefault(ctx.session_key, {})[bp.id] = bp
        bp.watcher = asyncio.create_task(self._watch(bp), name=f"process:{bp.id}")
        self._keep(bp.watcher)
        log.info("background process %s started in %s (pgid %d): %s", bp.id, ctx.session_key, bp.pgid, command)
        return bp

    async def _watch(self, bp: BackgroundProcess) -> None:
        rc = await bp.proc.wait()
        log.info("background process %s in %s exited with %s", bp.id, bp.session_key, rc)

    def read(self, ctx: TurnContext, pid: str) -> str:
        bp = self._get(ctx, pid)
        chunk, bp.cursor, lost = bp.buffer.since(bp.cursor)
        text = chunk.decode("utf-8", errors="replace")
        head = f"[{bp.id}: {bp.status()}]"
        if lost:
            head += f" [{lost} earlier bytes were dropped]"
        return head + "\n" + (text if text else "(no new output)")

    async def stop(self, ctx: TurnContext, pid: str) -> str:
        bp = self._get(ctx, pid)
        await self._terminate(bp)
        self.of(ctx.session_key).pop(bp.id, None)
        chunk, bp.cursor, _ = bp.buffer.since(bp.cursor)
        tail = chunk.decode("utf-8", errors="replace")
        return f"Stopped {bp.id} ({bp.status()})." + (f"\nLast output:\n{tail}" if tail else "")

    async def _terminate(self, bp: BackgroundProcess) -> None:
        try:
            await bp.job.stop()
            if bp.proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(bp.proc.wait(), jobs.KILL_GRACE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bp.buffer.closed.wait(), 0.5)
        finally:
            if bp.transport is not None:
                bp.transport.close()

    async def stop_session(self, session_key: str) -> int:
        """SIGTERM every process of the conversation now; SIGKILL stragglers in the background, so /stop
        and /new answer at once. Returns how many were still running."""
        procs = list(self._sessions.pop(session_key, {}).values())
        running = 0
        for bp in procs:
            if bp.job.alive():
                running += 1
                bp.job.terminate()
            task = asyncio.create_task(self._terminate(bp), name=f"stop:{bp.id}")
            self._keep(task)
        if procs:
            log.info("stopped %d background process(es) of %s", running, session_key)
        return running

    async def close(self) -> None:
        procs = [bp for session in self._sessions.values() for bp in session.values()]
        self._sessions.clear()
        await asyncio.gather(*(self._terminate(bp) for bp in procs), return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- tools ---

    def tools(self) -> list[Tool]:
        async def start(ctx: TurnContext, p: StartProcessParams) -> str:
            bp = await self.start(ctx, p.command)
            return (
                f"Started {bp.id} (process group {bp.pgid}). Read its output with read_process, stop it with "
                "stop_process. It is stopped when the conversation is reset or /stop is sent."
            )

        def read(ctx: TurnContext, p: ProcessIdParams) -> str:
            return self.read(ctx, p.id)

        async def stop(ctx: TurnContext, p: ProcessIdParams) -> str:
            return await self.stop(ctx, p.id)

        def listing(ctx: TurnContext, p: NoParams) -> str:
            mine = self.of(ctx.session_key)
            if not mine:
                return "No background processes in this conversation."
            return "\n".join(f"{bp.id}: {bp.status()}: {bp.command}" for bp in mine.values())

        return [
            Tool(
                "start_process",
                "Start a long-running shell command in the background (a server, a watcher, a "
                "long build) in the workspace. Returns an id at once; the output is kept "
                f"(last {self.config.buffer_bytes // 1024} KB). Run the program in the foreground (no `&`, no "
                "daemon mode): whatever it leaves running when its shell exits is stopped.",
                StartProcessParams,
                start,
                risk="high",
            ),
            Tool(
                "read_process",
                "Read the new output of a background process since the last read, and its status.",
                ProcessIdParams,
                _sync_to_async(read),
                risk="low",
                max_output=READ_MAX + 512,
            ),
            Tool(
                "stop_process",
                "Stop a background process and everything it started.",
                ProcessIdParams,
                stop,
                risk="low",
            ),
            Tool(
                "list_processes",
                "List this conversation's background processes.",
                NoParams,
                _sync_to_async(listing),
                risk="low",
            ),
        ]


def _sync_to_async(func: Callable[[TurnContext, Any], str]) -> Callable[[TurnContext, Any], Awaitable[str]]:
    # These only touch in-memory state owned by the event loop: run them on the loop, not in a thread.
    async def run(ctx: TurnContext, p: Any) -> str:
        return func(ctx, p)

    return run


class StartProcessParams(BaseModel):
    command: str = Field(description="Shell command line, run with /bin/sh in the workspace.")


class ProcessIdParams(BaseModel):
    id: str = Field(description="The process id returned by start_process, e.g. 'p1'.")


class NoParams(BaseModel):
    pass
