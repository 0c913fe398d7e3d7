"""`operator-use` as a user runs it: real processes on a test data home, driven from an async test (so the
fakes serving in the test's own loop keep answering while a command runs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STARTED = "operator-use started"


def agent_env(home: Path, **settings: str) -> dict[str, str]:
    """A clean environment: only this home, no terminal chat, no web chat unless asked."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "OPERATOR_HOME": str(home),
        "LANG": "C.UTF-8",
        "OPERATOR_CHANNELS__CLI__ENABLED": "false",
        "OPERATOR_CHANNELS__WEB__ENABLED": "false",
        **settings,
    }


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operator_use",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@dataclass
class Agent:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


@contextlib.asynccontextmanager
async def running_agent(env: dict[str, str], timeout: float = 60) -> AsyncIterator[Agent]:
    """`operator-use run`, yielded once it logged that it started (its control socket is then up); stopped
    with SIGTERM on the way out, and it must exit 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operator_use",
        "run",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    agent = Agent(proc)
    assert proc.stderr is not None
    stream = proc.stderr

    async def started() -> None:
        while line := (await stream.readline()).decode():
            agent.lines.append(line)
            if STARTED in line:
                return
        raise AssertionError("operator-use run ended before it started:\n" + agent.stderr)

    async def drain() -> None:  # keep the pipe empty: a full pipe would stall the agent's log writer
        while line := (await stream.readline()).decode():
            agent.lines.append(line)

    try:
        await asyncio.wait_for(started(), timeout)
        agent.drain = asyncio.create_task(drain())
        yield agent
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0, agent.stderr
        await asyncio.wait_for(agent.drain, 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if agent.drain is not None and not agent.drain.done():
            agent.drain.cancel()
