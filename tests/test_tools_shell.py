"""run_shell: cwd, output, exit code, timeouts and cancellation that kill the whole process group,
output cap, scrubbed environment. No test sleeps to time anything; waits are for conditions.

Processes are found by a unique marker in their command line (a `sleep` duration): as root the command
runs in a PID namespace of its own, where the pids it sees are not the host's."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.tools import jobs, shell
from operator_use.tools.shell import OUTPUT_HEAD, OUTPUT_TAIL, scrubbed_env, shell_tools

from .support.deps import unavailable


def make_ctx(ws: Path) -> TurnContext:
    return TurnContext(address=Address(channel="test", chat_id="1"), user_id="u", session_key="test:1", workspace=ws)


def alive_with(marker: str) -> list[int]:
    """Host pids of live (non-zombie) processes whose command line contains `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        # Where PID 1 does not reap (containers), a killed orphan stays a zombie: dead, just not buried.
        if marker.encode() in argv and state not in ("Z", "X"):
            found.append(int(name))
    return found


async def gone(marker: str, within: float = 10.0) -> bool:
    """Poll until no such process is left, for at most `within` seconds (a bound, not a wait for time): the
    state of processes in /proc has no event to wait on."""
    async with asyncio.timeout(within):
        while True:
            if not alive_with(marker):
                return True
            await asyncio.sleep(0.02)


@pytest.fixture
def marker():
    """A `sleep` duration no other process uses; whatever still runs with it at the end is killed."""
    value = f"{random.randint(500, 999)}.{random.randint(10**8, 10**9)}"
    yield value
    for pid in alive_with(value):  # a failing test must not leave it running
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def run(tmp_path: Path):
    tool = shell_tools()[0]
    ctx = make_ctx(tmp_path)

    async def _run(command: str, **kw):
        return await tool.run(ctx, {"command": command, **kw})

    return _run


@pytest.fixture
def fast_kill(monkeypatch):
    monkeypatch.setattr(jobs, "KILL_GRACE", 0.3)


async def test_runs_in_workspace(run, tmp_path: Path):
    res = await run("pwd; ls")
    (tmp_path / "x").write_text("")
    assert res.content.splitlines()[0] == str(tmp_path.resolve())
    assert (await run("ls")).content == "x\n[exit code 0]"


async def test_output_interleaved_and_exit_code(run):
    res = await run("echo out; echo err >&2; echo out2; exit 7")
    assert not res.is_error
    assert res.content == "out\nerr\nout2\n[exit code 7]"


async def test_no_stdin_and_no_output(run):
    assert (await run("cat")).content == "(no output)\n[exit code 0]"


async def test_killed_by_signal_is_reported(run):
    assert (await run("kill -9 $$")).content.endswith("[killed by signal SIGKILL]")


async def test_output_cap_keeps_head_and_tail(run):
    res = await run("printf 'START'; head -c 200000 /dev/zero | tr '\\0' a; printf 'END'")
    total = 200000 + 8
    assert res.content.startswith("START") and res.content.endswith("END\n[exit code 0]")
    assert f"[... {total - OUTPUT_HEAD - OUTPUT_TAIL} bytes omitted ...]" in res.content
    assert len(res.content) < OUTPUT_HEAD + OUTPUT_TAIL + 200


def test_capture_memory_is_bounded():
    loop = asyncio.new_event_loop()
    try:
        cap = shell._Capture(loop.create_future())
        for _ in range(1000):
            cap.data_received(b"z" * 10_000)
        assert len(cap.head) == OUTPUT_HEAD and len(cap.tail) <= 2 * OUTPUT_TAIL
        assert cap.total == 10_000_000
    finally:
        loop.close()


async def test_timeout_kills_whole_group(run, marker):
    res = await run(f"sleep {marker} & sleep {marker}", timeout=1)
    assert "timed out after 1 s" in res.content
    assert await gone(marker)  # the shell (its command line has the marker too) and both sleeps


async def test_timeout_escalates_to_sigkill(run, marker, fast_kill):
    # SIGTERM is ignored by the shell and inherited as ignored by its children.
    res = await run(f"trap '' TERM; sleep {marker} & sleep {marker}", timeout=1)
    assert "timed out" in res.content
    assert await gone(marker)


async def test_cancellation_kills_whole_group(run, marker, tmp_path: Path):
    task = asyncio.create_task(run(f"sleep {marker} & echo started > bg.txt; wait", timeout=600))
    async with asyncio.timeout(10):  # wait for the condition, not for a duration
        while not (tmp_path / "bg.txt").exists():  # noqa: ASYNC110 — written by another process
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(marker)


async def test_background_leftovers_are_stopped(run, marker):
    res = await run(f"sleep {marker} > /dev/null 2>&1 & echo done")
    assert res.content.startswith("done\n[exit code 0]") and "background" in res.content
    assert await gone(marker)


async def test_background_holding_the_pipe_does_not_wait_for_timeout(run, marker):
    # Without our own pipe, asyncio's wait() would block until the background sleep ends.
    async with asyncio.timeout(10):
        res = await run(f"(sleep {marker}; echo late) & echo early", timeout=600)
    assert res.content.startswith("early\n[exit code 0]") and "late" not in res.content
    assert await gone(marker)


def escape(marker: str) -> str:
    """A descendant that leaves the command's session and process group (setsid) and whose parent exits: it
    used to be reparented to init and run on. The command goes on once the escapee has started."""
    return f"setsid sh -c 'sleep {marker} & echo $! > esc.pid; wait' & until [ -s esc.pid ]; do sleep 0.01; done; "


async def test_setsid_descendant_ends_when_the_command_exits(run, marker):
    async with asyncio.timeout(10):  # and the call does not wait for it
        res = await run(escape(marker) + "echo done", timeout=600)
    assert res.content.startswith("done\n[exit code 0]") and "background were stopped" in res.content
    assert await gone(marker)


async def test_setsid_descendant_ends_with_the_timeout(run, marker):
    res = await run(escape(marker) + "sleep 100", timeout=1)
    assert "timed out after 1 s" in res.content
    assert await gone(marker)


async def test_setsid_descendant_ends_on_cancellation(run, marker, tmp_path: Path):
    task = asyncio.create_task(run(escape(marker) + "echo ready > ready.txt; sleep 100", timeout=600))
    async with asyncio.timeout(10):  # wait for the condition, not for a duration
        while not (tmp_path / "ready.txt").exists():  # noqa: ASYNC110 — written by another process
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(marker)


async def test_setsid_descendant_ignoring_sigterm_is_killed(run, marker, fast_kill):
    res = await run(
        f"setsid sh -c 'trap \"\" TERM; sleep {marker} & echo $! > esc.pid; wait' & "
        "until [ -s esc.pid ]; do sleep 0.01; done; echo done",
        timeout=600,
    )
    assert res.content.startswith("done\n[exit code 0]")
    assert await gone(marker)


async def test_a_command_that_kills_its_supervisor_leaves_nothing_behind(run, marker):
    # Without a sandbox the command used to be able to kill reaper.py (same user) and leave what it had
    # started running, reparented to init. As root, the supervisor is its PID namespace's init now.
    if os.geteuid() != 0:
        pytest.skip("a command of a non-root agent can still kill its supervisor (documented limit)")
    res = await run(escape(marker) + "kill -9 $PPID; echo after", timeout=600)
    assert await gone(marker)
    assert res.content.startswith("after\n[exit code 0]"), res.content  # it went on: the kill did nothing


async def test_a_root_agents_command_sees_only_its_own_processes(run):
    # Its own /proc: it cannot see (nor signal) the agent or any other process of the host.
    if os.geteuid() != 0:
        unavailable("needs root (CI runs as root)")
    res = await run(f"ls -d /proc/[0-9]*; ls /proc/{os.getpid()}/environ")
    assert "/proc/1\n" in res.content and "No such file" in res.content, res.content
    assert len([line for line in res.content.splitlines() if line.startswith("/proc/")]) <= 4, res.content


async def test_secrets_are_scrubbed(run, monkeypatch):
    monkeypatch.setenv("FOO_API_KEY", "sekrit-1")
    monkeypatch.setenv("GITHUB_TOKEN", "sekrit-2")
    monkeypatch.setenv("OPERATOR_TELEGRAM_BOT", "sekrit-3")
    monkeypatch.setenv("DATABASE_URL", "postgres://me:sekrit-4@db/x")
    monkeypatch.setenv("PLAIN_SETTING", "visible")
    res = await run("env")
    assert "sekrit" not in res.content
    assert "FOO_API_KEY" not in res.content
    assert "PLAIN_SETTING=visible" in res.content and "PATH=" in res.content


def test_scrubbed_env_rules():
    env = {
        "PATH": "/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        "aws_secret_access_key": "x",
        "SSH_AUTH_SOCK": "/s",
        "MY_PASSWD": "x",
        "DB_PASSWORD": "x",
        "SESSION_ID": "x",
        "X_COOKIE": "x",
        "GOOGLE_APPLICATION_CREDENTIALS": "x",
        "OPERATOR_ANYTHING": "x",
        "OPENAI_API_KEY": "x",
        "REDIS_URL": "redis://u:p@h:6379",
        "SITE_URL": "https://example.com/a",
    }
    assert scrubbed_env(env) == {
        "PATH": "/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        "SITE_URL": "https://example.com/a",
    }


@pytest.mark.parametrize("timeout", [0, 601, -5])
async def test_timeout_bounds(run, timeout):
    res = await run("true", timeout=timeout)
    assert res.is_error and "Invalid arguments" in res.content


async def test_missing_workspace(tmp_path: Path):
    res = await shell_tools()[0].run(make_ctx(tmp_path / "gone"), {"command": "true"})
    assert res.is_error and "does not exist" in res.content
