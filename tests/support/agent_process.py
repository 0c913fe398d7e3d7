"""`operator-use` as a user runs it: real processes on a test data home, driven from an async test (so the
fakes serving in the test's own loop keep answering while a command runs)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STARTED = "operator-use started"
WEB_CHAT = "Web chat: "


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


def fake_model(base_url: str, model: str = "fake-model") -> dict[str, str]:
    """The settings for a model served by a fake LLM server (tests/fakes/llm_server.py) at `base_url`."""
    return {
        "OPERATOR_LLM__PROVIDER": "openai",
        "OPERATOR_LLM__MODEL": model,
        "OPERATOR_LLM__API_KEY": "k",
        "OPERATOR_LLM__BASE_URL": base_url,
    }


def web_chat(port: int = 0) -> dict[str, str]:
    """The settings that turn the web chat on, at `port` (0: any free one; the address is printed)."""
    return {"OPERATOR_CHANNELS__WEB__ENABLED": "true", "OPERATOR_CHANNELS__WEB__PORT": str(port)}


@contextlib.asynccontextmanager
async def spawned(
    *args: str,
    env: dict[str, str],
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int = asyncio.subprocess.PIPE,
    preexec_fn: Callable[[], object] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m operator_use ARGS` from the checkout, stderr piped; killed on the way out if still running.
    stdin defaults to /dev/null, as under systemd (not whatever the test runner was given)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operator_use",
        *args,
        cwd=ROOT,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> Result:
    async with spawned(*args, env=env) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def run_cli_now(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """run_cli for a test without an event loop (stdin /dev/null too)."""
    return subprocess.run(
        [sys.executable, "-m", "operator_use", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Agent:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None
    output: asyncio.Task[bytes] | None = None

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    @property
    def stdout(self) -> str:
        """What it printed on stdout, once it has exited."""
        assert self.output is not None and self.output.done(), "stdout is read to its end when the agent exits"
        return self.output.result().decode()

    @property
    def web_chat_url(self) -> str:
        """The address it printed for the web chat (before it logged that it started)."""
        for line in self.lines:
            if line.startswith(WEB_CHAT):
                return line.removeprefix(WEB_CHAT).strip()
        raise AssertionError("operator-use run started without printing the web chat address:\n" + self.stderr)


@contextlib.asynccontextmanager
async def running_agent(
    env: dict[str, str],
    timeout: float = 60,
    *,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    preexec_fn: Callable[[], object] | None = None,
) -> AsyncIterator[Agent]:
    """`operator-use run`, yielded once it logged that it started (its control socket is then up); stopped
    with SIGTERM on the way out, and it must exit 0. stdin: /dev/null unless given (a pipe, or None with a
    `preexec_fn` that closes it)."""
    async with spawned("run", env=env, stdin=stdin, preexec_fn=preexec_fn) as proc:
        agent = Agent(proc)
        assert proc.stderr is not None and proc.stdout is not None
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

        # stdout too: read to its end, so that a full pipe never stalls the agent either
        agent.output = asyncio.create_task(proc.stdout.read())
        try:
            await asyncio.wait_for(started(), timeout)
            agent.drain = asyncio.create_task(drain())
            yield agent
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0, agent.stderr
            await asyncio.wait_for(asyncio.gather(agent.drain, agent.output), 10)
        finally:
            for task in (agent.drain, agent.output):
                if task is not None and not task.done():
                    task.cancel()
