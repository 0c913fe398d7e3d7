"""run_shell: cwd, output, exit code, timeouts and cancellation that kill the whole process group,
output cap, scrubbed environment. No test sleeps to time anything; waits are for conditions."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.tools import jobs, shell
from operator_use.tools.shell import OUTPUT_HEAD, OUTPUT_TAIL, scrubbed_env, shell_tools


def make_ctx(ws: Path) -> TurnContext:
    return TurnContext(address=Address(channel="test", chat_id="1"), user_id="u", session_key="test:1", workspace=ws)


def is_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Where PID 1 does not reap (containers), a killed orphan stays a zombie: dead, just not buried.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def read_pids(ws: Path, *names: str) -> list[int]:
    return [int((ws / n).read_text()) for n in names]


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


async def test_timeout_kills_whole_group(run, tmp_path: Path):
    res = await run("echo $$ > sh.pid; sleep 100 & echo $! > bg.pid; sleep 100", timeout=1)
    assert "timed out after 1 s" in res.content
    pids = read_pids(tmp_path, "sh.pid", "bg.pid")
    assert all(is_dead(p) for p in pids), pids


async def test_timeout_escalates_to_sigkill(run, tmp_path: Path, fast_kill):
    # SIGTERM is ignored by the shell and inherited as ignored by its children.
    res = await run("trap '' TERM; sleep 100 & echo $! > bg.pid; sleep 100", timeout=1)
    assert "timed out" in res.content
    assert is_dead(read_pids(tmp_path, "bg.pid")[0])


async def test_cancellation_kills_whole_group(run, tmp_path: Path):
    task = asyncio.create_task(run("echo $$ > sh.pid; sleep 100 & echo $! > bg.pid; wait", timeout=600))
    async with asyncio.timeout(10):  # wait for the condition, not for a duration
        while not ((tmp_path / "bg.pid").exists() and (tmp_path / "bg.pid").read_text().strip()):
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pids = read_pids(tmp_path, "sh.pid", "bg.pid")
    assert all(is_dead(p) for p in pids), pids


async def test_background_leftovers_are_stopped(run, tmp_path: Path):
    res = await run("sleep 100 > /dev/null 2>&1 & echo $! > bg.pid; echo done")
    assert res.content.startswith("done\n[exit code 0]") and "background" in res.content
    assert is_dead(read_pids(tmp_path, "bg.pid")[0])


async def test_background_holding_the_pipe_does_not_wait_for_timeout(run, tmp_path: Path):
    # Without our own pipe, asyncio's wait() would block until the background sleep ends.
    async with asyncio.timeout(10):
        res = await run("(sleep 100; echo late) & echo $! > bg.pid; echo early", timeout=600)
    assert res.content.startswith("early\n[exit code 0]") and "late" not in res.content
    assert is_dead(read_pids(tmp_path, "bg.pid")[0])


# A descendant that leaves the command's session and process group (setsid) and whose parent exits: it
# used to be reparented to init and run on. The command waits until the escapee has written its pid.
ESCAPE = "setsid sh -c 'sleep 1000 & echo $! > esc.pid; wait' & until [ -s esc.pid ]; do sleep 0.01; done; "


async def wait_dead(pid: int, within: float = 10.0) -> bool:
    """Poll for the process to be gone, for at most `within` seconds (a bound, not a wait for time)."""
    async with asyncio.timeout(within):
        while not is_dead(pid):
            await asyncio.sleep(0.02)
    return True


@pytest.fixture
def escapees(tmp_path: Path):
    """The escapee's pid, read after the command ran; killed at the end if a test failed to end it."""
    pids: list[int] = []

    def read() -> int:
        pids.append(read_pids(tmp_path, "esc.pid")[0])
        return pids[-1]

    yield read
    for pid in pids:
        if not is_dead(pid):
            os.kill(pid, signal.SIGKILL)


async def test_setsid_descendant_ends_when_the_command_exits(run, escapees):
    async with asyncio.timeout(10):  # and the call does not wait for it
        res = await run(ESCAPE + "echo done", timeout=600)
    escapee = escapees()
    assert res.content.startswith("done\n[exit code 0]") and "background were stopped" in res.content
    assert await wait_dead(escapee)


async def test_setsid_descendant_ends_with_the_timeout(run, escapees):
    res = await run(ESCAPE + "sleep 100", timeout=1)
    escapee = escapees()
    assert "timed out after 1 s" in res.content
    assert await wait_dead(escapee)


async def test_setsid_descendant_ends_on_cancellation(run, escapees, tmp_path: Path):
    task = asyncio.create_task(run(ESCAPE + "echo ready > ready.txt; sleep 100", timeout=600))
    async with asyncio.timeout(10):  # wait for the condition, not for a duration
        while not (tmp_path / "ready.txt").exists():
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_dead(escapees())


async def test_setsid_descendant_ignoring_sigterm_is_killed(run, escapees, fast_kill):
    res = await run("setsid sh -c 'trap \"\" TERM; sleep 1000 & echo $! > esc.pid; wait' & "
                    "until [ -s esc.pid ]; do sleep 0.01; done; echo done", timeout=600)
    escapee = escapees()
    assert res.content.startswith("done\n[exit code 0]")
    assert await wait_dead(escapee)


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
    env = {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm", "aws_secret_access_key": "x",
           "SSH_AUTH_SOCK": "/s", "MY_PASSWD": "x", "DB_PASSWORD": "x", "SESSION_ID": "x", "X_COOKIE": "x",
           "GOOGLE_APPLICATION_CREDENTIALS": "x", "OPERATOR_ANYTHING": "x", "OPENAI_API_KEY": "x",
           "REDIS_URL": "redis://u:p@h:6379", "SITE_URL": "https://example.com/a"}
    assert scrubbed_env(env) == {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm",
                                 "SITE_URL": "https://example.com/a"}


@pytest.mark.parametrize("timeout", [0, 601, -5])
async def test_timeout_bounds(run, timeout):
    res = await run("true", timeout=timeout)
    assert res.is_error and "Invalid arguments" in res.content


async def test_missing_workspace(tmp_path: Path):
    res = await shell_tools()[0].run(make_ctx(tmp_path / "gone"), {"command": "true"})
    assert res.is_error and "does not exist" in res.content
