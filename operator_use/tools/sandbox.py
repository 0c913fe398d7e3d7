"""Optional bubblewrap isolation for shell commands and background processes.

Inside the sandbox the whole host is mounted read-only, the workspace (and `tools.shell.writable`) is
writable, /tmp is a private tmpfs, the agent's data home (config, sessions, users) is hidden, and there is
no network unless `tools.shell.network` is true (a fresh network namespace: even the host's loopback
services are out of reach).

The command gets its own PID namespace: it sees no process of the host (not the agent's /proc entries, and
not /proc/<agent pid>/root, the host's root file system seen writable), and when bwrap goes,
`--die-with-parent` makes the kernel kill everything in the namespace, even a process that called setsid
(jobs.py stops it that way). As root, bwrap keeps every capability by default: `--cap-drop ALL` takes them
away (bwrap also sets no_new_privs, so none comes back on exec). No `--new-session`: the command stays in
the process group that jobs.py signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from ..agent.tools import ToolError
from .config import ShellConfig

log = logging.getLogger(__name__)


def bwrap_argv(bwrap: str, workspace: Path, config: ShellConfig, hide: tuple[Path, ...] = ()) -> list[str]:
    ws = os.path.realpath(workspace)
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # Hidden paths (the data home: config.yaml, sessions, users) become empty. One that contains the
    # workspace is hidden before the workspace is bound back on top; any other after, so it stays hidden.
    hidden = [os.path.realpath(h) for h in hide if os.path.isdir(h)]
    before = [h for h in hidden if Path(ws).is_relative_to(h)]
    after = [h for h in hidden if h not in before]
    for h in before:
        argv += ["--tmpfs", h]
    for extra in config.writable:
        path = os.path.realpath(os.path.expanduser(extra))
        if os.path.exists(path):
            argv += ["--bind", path, path]
    argv += ["--bind", ws, ws]
    for h in after:
        argv += ["--tmpfs", h]
    argv += ["--chdir", ws, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if os.geteuid() == 0:  # unprivileged, bwrap leaves no capability (and a setuid bwrap refuses the option)
        argv += ["--cap-drop", "ALL"]
    if not config.network:
        argv.append("--unshare-net")
    return [*argv, "--"]


class Isolation:
    """Decides, once, whether commands run under bwrap; `prefix()` gives the argv to put before them."""

    def __init__(self, config: ShellConfig | None = None, *, hide: tuple[Path, ...] = ()) -> None:
        self.config = config or ShellConfig(isolation="off")
        self.hide = hide
        self._usable: bool | None = None
        self._lock = asyncio.Lock()

    async def _probe(self, bwrap: str, workspace: Path) -> bool:
        try:
            proc = await asyncio.create_subprocess_exec(
                *bwrap_argv(bwrap, workspace, self.config, self.hide), "/bin/true",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), 10)
        except (OSError, TimeoutError) as exc:
            log.warning("bubblewrap cannot start: %s", exc)
            return False
        if proc.returncode != 0:
            log.warning("bubblewrap does not work here (exit %s): %s", proc.returncode,
                        err.decode(errors="replace").strip()[:300])
            return False
        return True

    async def prefix(self, workspace: Path) -> list[str]:
        mode = self.config.isolation
        if mode == "off":
            return []
        bwrap = shutil.which("bwrap")
        async with self._lock:
            if self._usable is None:
                self._usable = bwrap is not None and await self._probe(bwrap, workspace)
                if self._usable:
                    log.info("shell commands run under bubblewrap (network %s)",
                             "allowed" if self.config.network else "blocked")
                elif mode == "auto":
                    log.warning("bubblewrap is not available: shell commands run WITHOUT isolation "
                                "(install the bubblewrap package, or set tools.shell.isolation: off to silence this)")
        if self._usable and bwrap is not None:
            return bwrap_argv(bwrap, workspace, self.config, self.hide)
        if mode == "bwrap":
            raise ToolError("the shell requires bubblewrap isolation (tools.shell.isolation: bwrap) but `bwrap` is "
                            "missing or does not work on this host; the command was not run")
        return []
