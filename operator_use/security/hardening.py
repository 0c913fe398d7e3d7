"""Hardening of the agent's own process.

The agent holds API keys and tokens in its environment and memory. On Linux, another process of the same
user may read /proc/<agent pid>/environ, /proc/<agent pid>/mem and reach the agent's view of the file
system through /proc/<agent pid>/root, as long as the agent is "dumpable". Clearing that flag
(prctl PR_SET_DUMPABLE 0) leaves those entries to processes holding CAP_SYS_PTRACE only, and also means
no core dump full of secrets. Commands the agent runs are started without any capability (tools/reaper.py;
in the sandbox, tools/sandbox.py: as `nobody`), so even a root agent's commands cannot read them; as root
they do not even see the agent's process (a PID namespace and a /proc of their own).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3

_warned = False


def make_undumpable() -> bool:
    """Clear the dumpable flag of this process (Linux). Cheap, so it is called before every command: a
    change of credentials would set the flag again. True if it is clear now."""
    global _warned
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    except (OSError, AttributeError) as exc:
        if not _warned:
            _warned = True
            log.warning("could not protect the agent's process from other processes of its user: %s", exc)
        return False
    return True


def is_dumpable() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0
