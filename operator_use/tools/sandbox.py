"""Optional bubblewrap isolation for shell commands and background processes.

Inside the sandbox the whole host is mounted read-only, the workspace (and `tools.shell.writable`) is
writable, /tmp is a private tmpfs, the agent's data home (config, sessions, users) is hidden, and there is
no network unless `tools.shell.network` is true (a fresh network namespace: even the host's loopback
services are out of reach).

The command gets its own PID namespace: it sees no process of the host (not the agent's /proc entries, and
not /proc/<agent pid>/root, the host's root file system seen writable), and when bwrap goes,
`--die-with-parent` makes the kernel kill everything in the namespace, even a process that called setsid
(jobs.py stops it that way). No `--new-session`: the command stays in the process group that jobs.py
signals.

When the agent runs as root, uid 0 in the sandbox would still be root to every check the kernel makes by
uid rather than capability (/proc/sys/kernel/core_pattern: host root; root-only files; root's Unix
sockets), so the command runs as an unprivileged user instead (sandbox_user.py: `nobody`, with the
workspace made writable for it): bwrap keeps only CAP_SETUID, CAP_SETGID and CAP_SETPCAP for `setpriv`,
which switches to that user and empties every capability set before running the command (bwrap also sets
no_new_privs, so none comes back on exec). Directories on the way to the workspace that this user could
not enter (root's home) are replaced by empty ones, HOME is the private /tmp, and git trusts the
workspace's repositories although root owns them. (bwrap's own --unshare-user does not help here: as
root it maps the sandbox's user to uid 0 outside.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from ..agent.tools import ToolError
from .config import ShellConfig
from .sandbox_user import SANDBOX_GID, SANDBOX_UID, grant_workspace, permits

log = logging.getLogger(__name__)

_ENTER, _WRITE = 1, 2


def _is_under(path: str, top: str) -> bool:
    return Path(path).is_relative_to(top)


def _unenterable(targets: list[str], fresh: list[str]) -> list[str]:
    """The outermost directories on the way to `targets` that the sandbox's user cannot enter, among those
    the sandbox shows from the host (not under a `fresh` tmpfs, where bwrap creates the way itself)."""
    found: list[str] = []
    for target in targets:
        for parent in reversed(Path(target).parents[:-1]):  # from the top, without "/"
            p = str(parent)
            if any(_is_under(p, f) for f in fresh + found):
                break
            if not permits(p, _ENTER):
                found.append(p)
                break
    return found


# git refuses a repository its user does not own, and the workspace's are root's: trust them all (the
# sandbox is what protects us here). The command's environment has no GIT_CONFIG_KEY_* of its own to keep:
# shell.scrubbed_env drops every variable named *KEY*.
GIT_TRUSTS_EVERYTHING = [
    "--setenv",
    "GIT_CONFIG_COUNT",
    "1",
    "--setenv",
    "GIT_CONFIG_KEY_0",
    "safe.directory",
    "--setenv",
    "GIT_CONFIG_VALUE_0",
    "*",
]


def bwrap_argv(
    bwrap: str, workspace: Path, config: ShellConfig, hide: tuple[Path, ...] = (), setpriv: str | None = None
) -> list[str]:
    """The argv to put before `/bin/sh -c COMMAND`. As root, `setpriv` (its path) is required."""
    root = os.geteuid() == 0
    ws = os.path.realpath(workspace)
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp"]
    # Hidden paths (the data home: config.yaml, sessions, users) become empty. One that contains the
    # workspace is hidden before the workspace is bound back on top; any other after, so it stays hidden.
    hidden = [os.path.realpath(h) for h in hide if os.path.isdir(h)]
    before = [h for h in hidden if _is_under(ws, h)]
    after = [h for h in hidden if h not in before]
    extras = [p for p in (os.path.realpath(os.path.expanduser(e)) for e in config.writable) if os.path.exists(p)]
    if root:  # emptied: its user could not see inside anyway
        before += _unenterable([*extras, ws], ["/tmp", *before])
    fresh = ["/tmp"]

    def mount(*op: str) -> None:
        # On an empty tmpfs, bwrap would create the way to the mount point for root only (mode 0700).
        for parent in reversed(Path(op[-1]).parents[:-1]):
            if str(parent) not in fresh and any(_is_under(str(parent), f) for f in fresh):
                argv.extend(["--perms", "0755", "--dir", str(parent)])
        argv.extend(op)
        if op[0] == "--tmpfs":
            fresh.append(op[-1])

    for h in sorted(before, key=lambda p: len(Path(p).parts)):  # outer ones first
        mount("--tmpfs", h)
    for path in extras:
        mount("--bind", path, path)
    mount("--bind", ws, ws)
    for h in after:
        mount("--tmpfs", h)
    argv += ["--chdir", ws, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if not config.network:
        argv.append("--unshare-net")
    if not root:  # unprivileged, bwrap leaves no capability (and a setuid bwrap refuses --cap-drop)
        return [*argv, "--"]
    if setpriv is None:
        raise ValueError("as root, sandboxed commands run as an unprivileged user: setpriv is needed")
    argv += [
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
        "--cap-add",
        "CAP_SETPCAP",
        "--setenv",
        "HOME",
        "/tmp",
        *GIT_TRUSTS_EVERYTHING,
    ]
    return [
        *argv,
        "--",
        setpriv,
        f"--reuid={SANDBOX_UID}",
        f"--regid={SANDBOX_GID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


class Isolation:
    """Decides, once, whether commands run under bwrap; `prefix()` gives the argv to put before them."""

    def __init__(self, config: ShellConfig | None = None, *, hide: tuple[Path, ...] = ()) -> None:
        self.config = config or ShellConfig(isolation="off")
        self.hide = hide
        self._usable: bool | None = None
        self._granted: set[str] = set()
        self._lock = asyncio.Lock()
        if config is not None and config.isolation == "off" and os.geteuid() == 0:
            log.warning(
                "the agent runs as root with tools.shell.isolation: off: shell commands are NOT confined. "
                "Without capabilities, uid 0 can still write the host's kernel settings (/proc/sys) and "
                "root's files, this data home's config.yaml included. Use isolation: auto with bubblewrap "
                "installed, or run the agent as its own user"
            )

    async def _probe(self, argv: list[str], workspace: Path) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                "/bin/true",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 10)
        except (OSError, TimeoutError) as exc:
            log.warning("bubblewrap cannot start: %s", exc)
            return False
        if proc.returncode != 0:
            log.warning(
                "bubblewrap does not work here (exit %s): %s",
                proc.returncode,
                err.decode(errors="replace").strip()[:300],
            )
            return False
        return True

    def _argv(self, workspace: Path) -> list[str] | None:
        bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
        if bwrap is None:
            return None
        if os.geteuid() == 0 and setpriv is None:
            if self._usable is None:  # said once, when deciding
                log.warning(
                    "`setpriv` (util-linux) is missing: as root, sandboxed commands must run as an "
                    "unprivileged user and it is what switches to it"
                )
            return None
        return bwrap_argv(bwrap, workspace, self.config, self.hide, setpriv)

    def _give_access(self, workspace: Path) -> None:
        """As root: let the sandbox's user write the workspace (once per workspace and process). In a thread."""
        ws = os.path.realpath(workspace)
        if os.geteuid() != 0 or ws in self._granted:
            return
        try:
            failed = grant_workspace(ws)
        except OSError as exc:
            raise ToolError(
                f"cannot let the sandbox's user (uid {SANDBOX_UID}) write the workspace {ws}: {exc}. "
                "Its file system needs POSIX ACLs; or set tools.shell.isolation: off. The command was "
                "not run"
            ) from None
        if failed:
            log.warning("%d entries of the workspace %s stay read-only in the sandbox", failed, ws)
        self._granted.add(ws)
        for extra in self.config.writable:
            path = os.path.realpath(os.path.expanduser(extra))
            if os.path.exists(path) and not permits(path, _WRITE | _ENTER if os.path.isdir(path) else _WRITE):
                log.warning(
                    "tools.shell.writable: %s is not writable by uid %d, which sandboxed commands run as "
                    "when the agent is root (grant it, e.g. setfacl -R -m u:%d:rwX)",
                    path,
                    SANDBOX_UID,
                    SANDBOX_UID,
                )

    async def usable(self, workspace: Path) -> bool:
        """Whether bubblewrap is installed and runs a command here (`operator-use doctor`). Unlike `prefix`
        it decides nothing and grants nothing; why it fails is logged as a warning."""
        argv = await asyncio.to_thread(self._argv, workspace)
        return argv is not None and await self._probe(argv, workspace)

    async def prefix(self, workspace: Path) -> list[str]:
        mode = self.config.isolation
        if mode == "off":
            return []
        async with self._lock:
            argv = await asyncio.to_thread(self._argv, workspace)  # it looks at the file system
            if self._usable is None:
                self._usable = argv is not None and await self._probe(argv, workspace)
                if self._usable:
                    log.info(
                        "shell commands run under bubblewrap (network %s%s)",
                        "allowed" if self.config.network else "blocked",
                        f", as uid {SANDBOX_UID}" if os.geteuid() == 0 else "",
                    )
                elif mode == "auto":
                    log.warning(
                        "bubblewrap is not available: shell commands run WITHOUT isolation%s "
                        "(install the bubblewrap package, or set tools.shell.isolation: off to silence this)",
                        ", as root" if os.geteuid() == 0 else "",
                    )
            if self._usable and argv is not None:
                await asyncio.to_thread(self._give_access, workspace)
                return argv
        if mode == "bwrap":
            raise ToolError(
                "the shell requires bubblewrap isolation (tools.shell.isolation: bwrap) but `bwrap` is "
                "missing or does not work on this host; the command was not run"
            )
        return []
