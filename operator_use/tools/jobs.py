"""A shell command started by run_shell or start_process, contained so that everything it starts ends
with it (even a process that called setsid), and stopped with SIGTERM, a grace period, then SIGKILL.

How it is contained depends on how it runs, decided when it starts:

- "sandbox": under bubblewrap (sandbox.py) in its own PID namespace; when bwrap goes, the kernel kills the
  whole namespace. Stopping sends SIGTERM to the command's processes but not to bwrap itself (its death
  would SIGKILL them before they could act on SIGTERM), then SIGKILL to the group.
- "reaper": without a sandbox, on Linux: reaper.py sits between us and the shell and every descendant
  stays below it: as root, in a PID namespace whose init is the reaper's (the command cannot kill it, and
  the kernel ends the namespace with it); otherwise the reaper is a child subreaper (which a command of the
  same user can kill). It is the only process we signal; it ends the rest, then exits. It also starts the
  command without capabilities (a root agent's command could otherwise read our /proc entries).
- "group": elsewhere: the shell leads its own process group, signalled as a whole; setsid escapes it.

Every command also leads its own session (start_new_session), so a terminal's signals do not reach it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..security.hardening import make_undumpable

KILL_GRACE = 2.0  # between SIGTERM and SIGKILL
REAPER_MARGIN = 3.0  # how much longer than KILL_GRACE the reaper gets to end everything before we step in
REAPER = Path(__file__).with_name("reaper.py")

Way = Literal["sandbox", "reaper", "group"]


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of a process group, from /proc (Linux)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()  # after "(comm)": state ppid pgrp ...
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


def group_alive(pgid: int) -> bool:
    """True if a live (non-zombie) process is left in the group.

    killpg(pgid, 0) alone also succeeds on zombies, and orphans stay zombies forever when PID 1 does not
    reap (containers), so on Linux we look at /proc for a member that is not a zombie.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass(eq=False)
class Job:
    proc: asyncio.subprocess.Process
    way: Way
    report_fd: int | None = None  # reaper.py writes b"L" here when it stopped leftovers after the command

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the first process leads its own group

    def alive(self) -> bool:
        # With the reaper, the group holds the reaper until nothing below it is left.
        return self.proc.returncode is None or group_alive(self.pgid)

    def terminate(self) -> None:
        """Send the first SIGTERM of a stop, without waiting."""
        if self.way == "reaper":
            if self.proc.returncode is None:  # once reaped, its pid may belong to someone else
                _kill(self.proc.pid, signal.SIGTERM)
        elif self.way == "sandbox":
            for pid in group_members(self.pgid):
                if pid != self.pgid:
                    _kill(pid, signal.SIGTERM)
        else:
            signal_group(self.pgid, signal.SIGTERM)

    async def stop(self) -> bool:
        """End the command and everything it started. Returns True if anything was still running."""
        if not self.alive():
            return False
        loop = asyncio.get_running_loop()
        try:
            self.terminate()
            # The reaper escalates to SIGKILL itself after KILL_GRACE; SIGKILLing it would orphan the rest.
            deadline = loop.time() + KILL_GRACE + (REAPER_MARGIN if self.way == "reaper" else 0.0)
            # The group's other members have no handle to await: their end is read from the OS.
            while self.alive() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            # Also runs if we are cancelled while waiting: nothing survives this function.
            if self.alive():
                signal_group(self.pgid, signal.SIGKILL)
        return True

    def stopped_leftovers(self) -> bool:
        """After the reaper exited: did it have to stop processes the command left running?"""
        if self.report_fd is None:
            return False
        try:
            return b"L" in os.read(self.report_fd, 16)
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self.report_fd is not None:
            os.close(self.report_fd)
            self.report_fd = None


async def start_job(
    argv_prefix: list[str], command: str, workspace: Path, env: dict[str, str], stdout: int, *, report: bool = False
) -> Job:
    """Start `command` with /bin/sh; `argv_prefix` is the sandbox's (bwrap ... --) or empty.

    `report`: ask the reaper to say whether it stopped leftovers (see Job.stopped_leftovers)."""
    make_undumpable()  # before any command can look at us (App.start does it too; this covers embedders)
    common: dict[str, Any] = {
        "stdin": asyncio.subprocess.DEVNULL,
        "stdout": stdout,
        "stderr": stdout,
        "cwd": workspace,
        "env": env,
        "start_new_session": True,
    }
    if argv_prefix:
        proc = await asyncio.create_subprocess_exec(*argv_prefix, "/bin/sh", "-c", command, **common)
        return Job(proc, "sandbox")
    if not sys.platform.startswith("linux") or not sys.executable or getattr(sys, "frozen", False):
        return Job(await asyncio.create_subprocess_shell(command, **common), "group")
    rfd, wfd = os.pipe() if report else (-1, -1)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            str(REAPER),
            repr(KILL_GRACE),
            str(wfd),
            str(os.getpid()),
            "--",
            "/bin/sh",
            "-c",
            command,
            pass_fds=(wfd,) if report else (),
            **common,
        )
    except BaseException:
        if report:
            os.close(rfd)
        raise
    finally:
        if report:
            os.close(wfd)
    if report:
        os.set_blocking(rfd, False)
    return Job(proc, "reaper", rfd if report else None)
