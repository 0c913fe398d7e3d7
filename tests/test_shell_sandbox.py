"""run_shell and start_process under bubblewrap: the host is read-only, the workspace writable, /tmp
private, and the network gone unless allowed. Needs the `bwrap` program (Debian: bubblewrap)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.tools.config import ProcessesConfig, ShellConfig
from operator_use.tools.processes import ProcessManager
from operator_use.tools.sandbox import Isolation
from operator_use.tools.shell import shell_tools

from .support.deps import require_binary, unavailable


def ctx_for(ws: Path) -> TurnContext:
    return TurnContext(address=Address(channel="t", chat_id="1"), user_id="u", session_key="t:1", workspace=ws)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    require_binary("bwrap")
    ws = tmp_path / "ws"
    ws.mkdir()
    # Not under /tmp: the sandbox has its own empty /tmp, which would hide this directory rather than
    # show that the host is read-only.
    outside = Path("/var/tmp") / f"operator-use-outside-{uuid.uuid4().hex}"
    outside.mkdir(parents=True)
    try:
        yield ws, outside
    finally:
        shutil.rmtree(outside, ignore_errors=True)


async def run(ws: Path, command: str, **shell: object) -> str:
    tool = shell_tools(isolation=Isolation(ShellConfig(isolation="bwrap", **shell)))[0]  # type: ignore[arg-type]
    result = await tool.run(ctx_for(ws), {"command": command, "timeout": 30})
    assert not result.is_error, result.content
    return result.content


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bool]]]:
    """A TCP server on the host's loopback; records every connection it accepts."""
    seen: list[bool] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(True)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


def sandbox_python() -> str:
    """A Python the sandboxed command can run: not the venv's (a checkout under /tmp is hidden by the
    sandbox's private /tmp), and, as root, one every user may reach (the command runs as nobody; root's
    own Python may live in its home)."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        path = Path(candidate)
        if os.geteuid() != 0 or (
            path.exists() and path.stat().st_mode & 0o001 and all(p.stat().st_mode & 0o001 for p in path.parents)
        ):
            return candidate
    pytest.skip("no Python that every user may run")


def connect_probe(port: int) -> str:
    code = (
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 3).close(); print('CONNECTED')\n"
        "except OSError as e:\n    print('NO-NETWORK', e)"
    )
    return f'{sandbox_python()} -c "{code}"'


async def test_writes_outside_the_workspace_fail(dirs: tuple[Path, Path]) -> None:
    ws, outside = dirs
    probe = Path.home() / f".operator-use-probe-{uuid.uuid4().hex}"
    out = await run(ws, f"echo in > inside.txt; echo out > {outside}/escape.txt; echo rc=$?; touch {probe}")
    assert (ws / "inside.txt").read_text() == "in\n"
    assert not (outside / "escape.txt").exists() and not probe.exists()
    assert "Read-only file system" in out and "rc=2" in out, out  # dash exits 2 on a failed redirect
    # Read-only too, or, for a root agent's command (run as nobody), root's home cannot even be entered.
    assert "touch: cannot touch" in out, out


async def test_tmp_is_private(dirs: tuple[Path, Path]) -> None:
    ws, _ = dirs
    name = f"/tmp/operator-use-probe-{uuid.uuid4().hex}"
    out = await run(ws, f"echo x > {name} && cat {name}")
    assert out.startswith("x\n")
    assert not os.path.exists(name)


async def test_network_is_blocked_by_default(dirs: tuple[Path, Path], listener: tuple[int, list[bool]]) -> None:
    ws, _ = dirs
    port, seen = listener
    out = await run(ws, connect_probe(port))
    assert "NO-NETWORK" in out and "CONNECTED" not in out
    assert seen == []


async def test_network_when_allowed(dirs: tuple[Path, Path], listener: tuple[int, list[bool]]) -> None:
    ws, _ = dirs
    port, seen = listener
    out = await run(ws, connect_probe(port), network=True)
    assert "CONNECTED" in out
    assert seen == [True]


async def test_timeout_still_kills_the_sandboxed_command(dirs: tuple[Path, Path]) -> None:
    ws, _ = dirs
    tool = shell_tools(isolation=Isolation(ShellConfig(isolation="bwrap")))[0]
    result = await tool.run(ctx_for(ws), {"command": "sleep 60 & sleep 60", "timeout": 1})
    assert "[timed out after 1 s" in result.content


async def test_background_process_is_sandboxed_too(dirs: tuple[Path, Path]) -> None:
    ws, outside = dirs
    manager = ProcessManager(ProcessesConfig(), Isolation(ShellConfig(isolation="bwrap")))
    ctx = ctx_for(ws)
    bp = await manager.start(ctx, f"echo out > {outside}/escape.txt; echo done")
    await asyncio.wait_for(bp.proc.wait(), 10)
    await asyncio.wait_for(bp.buffer.closed.wait(), 10)
    assert "Read-only file system" in manager.read(ctx, bp.id)
    assert not (outside / "escape.txt").exists()
    await manager.close()


async def test_required_isolation_without_bwrap_refuses_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no bwrap to be found
    tool = shell_tools(isolation=Isolation(ShellConfig(isolation="bwrap")))[0]
    result = await tool.run(ctx_for(tmp_path), {"command": "touch ran.txt"})
    assert result.is_error and "requires bubblewrap" in result.content
    assert not (tmp_path / "ran.txt").exists()


async def test_the_data_home_is_hidden_but_its_workspace_is_not(tmp_path: Path) -> None:
    require_binary("bwrap")
    home = Path("/var/tmp") / f"operator-use-home-{uuid.uuid4().hex}"
    try:
        (home / "workspace").mkdir(parents=True)
        (home / "config.yaml").write_text("llm: {api_key: sk-very-secret}\n")
        tool = shell_tools(isolation=Isolation(ShellConfig(isolation="bwrap"), hide=(home,)))[0]
        result = await tool.run(
            ctx_for(home / "workspace"),
            {"command": f"ls -a {home}; cat {home}/config.yaml; echo hi > here.txt; cat here.txt"},
        )
        assert "sk-very-secret" not in result.content and "No such file" in result.content
        assert (home / "workspace" / "here.txt").read_text() == "hi\n"
        # A workspace elsewhere: the home is hidden after the workspace is bound.
        ws = tmp_path / "ws"
        ws.mkdir()
        result = await tool.run(ctx_for(ws), {"command": f"cat {home}/config.yaml; touch ok.txt"})
        assert "sk-very-secret" not in result.content and (ws / "ok.txt").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- as root: the agent's /proc entries, capabilities, and descendants that leave the process group -----


async def test_the_host_is_out_of_reach_through_the_agents_proc_root(dirs: tuple[Path, Path]) -> None:
    # /proc/<pid>/root is the agent's view of the file system: the host's root, writable, data home shown.
    # As root, bwrap used to keep every capability and the host's PIDs were visible, so this went through.
    _, outside = dirs
    home = Path("/var/tmp") / f"operator-use-home-{uuid.uuid4().hex}"
    try:
        (home / "workspace").mkdir(parents=True)
        (home / "config.yaml").write_text("llm: {api_key: sk-very-secret}\n")
        tool = shell_tools(isolation=Isolation(ShellConfig(isolation="bwrap"), hide=(home,)))[0]
        root = f"/proc/{os.getpid()}/root"
        result = await tool.run(
            ctx_for(home / "workspace"),
            {
                "command": (
                    f"cat {root}{home}/config.yaml; echo out > {root}{outside}/escape.txt; "
                    f"ls {root}{home} | sed 's/^/entry: /'"
                )
            },
        )
        assert not result.is_error, result.content
        assert "sk-very-secret" not in result.content and "entry: config.yaml" not in result.content, result.content
        assert not (outside / "escape.txt").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def test_a_sandboxed_command_holds_no_capability(dirs: tuple[Path, Path]) -> None:
    ws, _ = dirs
    out = await run(ws, "grep -E '^Cap(Prm|Eff|Inh|Amb)' /proc/self/status")
    caps = dict(line.split(":") for line in out.splitlines() if line.startswith("Cap"))
    assert len(caps) == 4 and all(int(v, 16) == 0 for v in caps.values()), out


def sleepers(marker: str) -> list[int]:
    """Host pids of live `sleep <marker>` processes (a sandboxed command only knows its namespace's pids)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[:2]
            state = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if argv == [b"sleep", marker.encode()] and state not in ("Z", "X"):
            found.append(int(name))
    return found


@pytest.fixture
def escape() -> Iterator[tuple[str, str]]:
    """A command part whose `sleep` leaves the process group (setsid) and is orphaned at once, and its marker.
    The command goes on once that sleep has started."""
    marker = f"{random.randint(5000, 9999)}.{uuid.uuid4().int % 10**9}"
    yield (f"setsid sh -c 'sleep {marker} & echo $! > esc.pid' & until [ -s esc.pid ]; do sleep 0.01; done; ", marker)
    for pid in sleepers(marker):  # a failing test must not leave it running
        os.kill(pid, signal.SIGKILL)


async def gone(marker: str, within: float = 10.0) -> bool:
    """Poll until no such sleep is left, for at most `within` seconds (a bound, not a wait for time)."""
    async with asyncio.timeout(within):
        while sleepers(marker):  # noqa: ASYNC110 — processes have no event to await: read from the OS
            await asyncio.sleep(0.02)
    return True


async def test_what_left_the_group_ends_with_the_sandboxed_command(
    dirs: tuple[Path, Path], escape: tuple[str, str]
) -> None:
    ws, _ = dirs
    part, marker = escape
    tool = shell_tools(isolation=Isolation(ShellConfig(isolation="bwrap")))[0]
    result = await tool.run(ctx_for(ws), {"command": part + "echo done", "timeout": 30})
    assert result.content.startswith("done\n[exit code 0]"), result.content
    assert await gone(marker)
    (ws / "esc.pid").unlink()
    result = await tool.run(ctx_for(ws), {"command": part + "sleep 100", "timeout": 1})
    assert "[timed out after 1 s" in result.content
    assert await gone(marker)


async def test_what_left_the_group_ends_with_a_sandboxed_background_process(
    dirs: tuple[Path, Path], escape: tuple[str, str]
) -> None:
    ws, _ = dirs
    part, marker = escape
    manager = ProcessManager(ProcessesConfig(), Isolation(ShellConfig(isolation="bwrap")))
    ctx = ctx_for(ws)
    bp = await manager.start(ctx, part + "echo up; exec sleep 300")
    async with asyncio.timeout(10):
        while not sleepers(marker):  # noqa: ASYNC110 — processes have no event to await: read from the OS
            await asyncio.sleep(0.02)
    assert await manager.stop_session(ctx.session_key) == 1
    assert await gone(marker)
    await manager.close()
    assert bp.proc.returncode is not None


# --- a root agent's sandboxed command is not root: it runs as nobody ----------------------------------


def as_root() -> None:
    if os.geteuid() != 0:
        unavailable("about a root agent (CI runs as root)")


CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")


async def test_a_root_agents_sandboxed_command_cannot_change_kernel_settings(dirs: tuple[Path, Path]) -> None:
    # uid 0 without capabilities used to write /proc/sys: the kernel checks its files by uid, and the
    # sandbox's /proc is read-write. Through core_pattern that is root on the host. The value written back
    # is the one read, so the host is never changed, even if this fails. (Files writable by all, such as
    # ns_last_pid, check a capability instead.)
    as_root()
    ws, _ = dirs
    before = CORE_PATTERN.read_text()
    out = await run(
        ws,
        f"v=$(cat {CORE_PATTERN}) && printf '%s\\n' \"$v\" > {CORE_PATTERN} && echo SYSCTL-WRITTEN; "
        "find /proc/sys -type f -writable ! -perm -o=w 2>/dev/null | sed 's/^/writable: /'; "
        "[ -e /proc/sysrq-trigger ] && [ -w /proc/sysrq-trigger ] && echo SYSRQ-WRITABLE; "
        "echo checked",
    )
    assert CORE_PATTERN.read_text() == before
    assert "checked" in out and "Permission denied" in out, out
    assert "SYSCTL-WRITTEN" not in out and "writable:" not in out and "SYSRQ-WRITABLE" not in out, out


async def test_a_root_agents_sandboxed_command_cannot_read_root_only_files(dirs: tuple[Path, Path]) -> None:
    as_root()
    ws, outside = dirs
    secret = outside / "root-only.txt"
    secret.write_text("root-secret\n")
    secret.chmod(0o600)
    out = await run(ws, f"cat /etc/shadow; cat {secret}; ls /root")
    assert "root:" not in out and "root-secret" not in out, out
    assert out.count("Permission denied") == 3, out


async def test_a_root_agents_sandboxed_command_cannot_use_roots_unix_sockets(dirs: tuple[Path, Path]) -> None:
    # docker.sock, systemd's and D-Bus's sockets let uid 0 in: the network namespace does not cut a socket
    # on the file system, and connecting needs no capability.
    as_root()
    ws, outside = dirs
    seen: list[bool] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(True)
        writer.close()

    path = outside / "root.sock"
    server = await asyncio.start_unix_server(on_connect, path)
    try:
        path.chmod(0o600)
        code = (
            f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('{path}'); print('CONNECTED')\n"
            "except OSError as e:\n    print('REFUSED', e)"
        )
        out = await run(ws, f'{sandbox_python()} -c "{code}"')
    finally:
        server.close()
        await server.wait_closed()
    assert "REFUSED" in out and "CONNECTED" not in out, out
    assert seen == []


async def test_a_root_agents_sandboxed_command_still_works_in_the_workspace(dirs: tuple[Path, Path]) -> None:
    # Root owns the workspace; the command's user is given access to what is there and what the agent
    # writes there later. /tmp and HOME (the private /tmp) are writable too.
    as_root()
    ws, _ = dirs
    (ws / "old.txt").write_text("old\n")
    (ws / "sub").mkdir()
    (ws / "sub" / "deep.txt").write_text("deep\n")
    out = await run(
        ws,
        "echo more >> old.txt && echo ok1; echo more >> sub/deep.txt && echo ok2; "
        "mkdir -p sub/new && echo new > sub/new/f.txt && echo ok3; "
        'touch /tmp/t "$HOME/h" && echo ok4',
    )
    assert all(f"ok{i}" in out for i in range(1, 5)), out
    assert (ws / "old.txt").read_text() == "old\nmore\n" and (ws / "sub" / "new" / "f.txt").read_text() == "new\n"
    (ws / "later.txt").write_text("later\n")  # as the agent's write_file does, after the first command
    (ws / "sub" / "new" / "later.txt").write_text("later\n")
    out = await run(ws, "echo more >> later.txt && echo more >> sub/new/later.txt && echo ok5")
    assert "ok5" in out and (ws / "later.txt").read_text() == "later\nmore\n", out


async def test_a_root_agents_sandboxed_command_can_use_git_in_the_workspace(dirs: tuple[Path, Path]) -> None:
    # git refuses a repository its user does not own; the workspace's belong to root.
    as_root()
    git = require_binary("git")
    ws, _ = dirs
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-qm", "one", "--allow-empty"]):
        subprocess.run([git, *args], cwd=ws, check=True, capture_output=True)
    out = await run(
        ws,
        "echo x > f.txt && git add f.txt && git -c user.name=t -c user.email=t@example.com "
        "commit -qm two && git log --oneline | wc -l",
    )
    assert out.startswith("2\n[exit code 0]"), out


async def test_the_workspace_access_leaves_hard_links_alone(dirs: tuple[Path, Path]) -> None:
    # A hard link in the workspace may be another name for a file elsewhere: giving the sandbox's user
    # access to it would give access to that file.
    as_root()
    ws, _ = dirs
    secret = ws.parent / "secret.txt"  # outside the workspace, on its file system
    secret.write_text("secret\n")
    secret.chmod(0o600)
    os.link(secret, ws / "link.txt")
    out = await run(ws, "cat link.txt")
    assert "secret" not in out.replace("secret.txt", "") and "Permission denied" in out, out
    with pytest.raises(OSError):
        os.getxattr(secret, "system.posix_acl_access")


def test_a_root_agent_without_isolation_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    as_root()
    with caplog.at_level(logging.WARNING, logger="operator_use.tools.sandbox"):
        Isolation(ShellConfig(isolation="off"))
    assert any("root" in r.getMessage() and "NOT confined" in r.getMessage() for r in caplog.records), caplog.text
