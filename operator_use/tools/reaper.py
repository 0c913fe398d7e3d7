"""The supervisor between the agent and a shell command run without a sandbox (Linux only).

    python -I -S reaper.py GRACE REPORT_FD AGENT_PID -- /bin/sh -c COMMAND

A command that calls setsid (or daemonizes) leaves the process group the agent would signal, and its
parent may exit before it: it would be reparented to init and outlive timeouts, /stop and /new. So
everything the command starts stays below this process, whatever its session or parent, and is ended
(SIGTERM, GRACE seconds, then SIGKILL) when:
- the command exits while something it started is still running (then b"L" is written to REPORT_FD, when
  that is not -1, so run_shell can say so),
- this process receives SIGTERM, SIGINT or SIGHUP (the agent stopping the command),
- the agent dies (PR_SET_PDEATHSIG).
It exits only once nothing is left, with the command's status (a signal is raised again).

How everything stays below it:
- When it may (root: CAP_SYS_ADMIN), the command runs in a PID namespace of its own, below a second
  process of ours that is the namespace's init. The command cannot kill that init (the kernel ignores
  SIGKILL sent to it from inside), cannot even address this process or the agent (they are outside the
  namespace), and when that init dies for any reason the kernel kills everything in the namespace. The
  namespace also gets its own /proc (in a mount namespace of its own, nothing propagates back to the
  host), so `ps` and `kill` inside see and address its processes only.
- Otherwise it is a child subreaper (PR_SET_CHILD_SUBREAPER) and ends every descendant it finds in /proc.
  A command of the same user can then kill it and leave the rest running: the limit without root.

The command also gets no capability: a root agent's command would otherwise keep CAP_SYS_PTRACE and read
the agent's environment (API keys) and memory through /proc, or reach the host through /proc/<pid>/root.

Standard library only, no package import: it runs with -I -S, outside the virtualenv.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_SLAVE = 2, 4, 8, 0x4000, 1 << 19
LINUX_CAPABILITY_VERSION_3 = 0x20080522

WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
KILL_REPEAT = 0.05  # after SIGKILL, how often to look again for a process forked meanwhile


def _caps(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return 0


def drop_capabilities(libc: ctypes.CDLL) -> None:
    """Empty every capability set of this process, so that neither it nor what it executes holds one.

    For root, execve grants the whole bounding set again: the bounding set is emptied too (or, without
    CAP_SETPCAP to do that, no_new_privs forbids gaining any). Raises OSError if that cannot be done."""
    if not (_caps("CapPrm") or _caps("CapEff") or _caps("CapInh") or _caps("CapAmb") or os.geteuid() == 0):
        return
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP: see no_new_privs below
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3: none to clear
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    if _caps("CapBnd") and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"no_new_privs: {os.strerror(err)}")
    if _caps("CapPrm") or _caps("CapEff") or _caps("CapInh"):
        raise OSError(0, "capabilities are still held")


def descendants() -> list[int]:
    """Every process below this one (all of them, as a subreaper keeps orphans below it)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    todo = [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def signal_descendants(sig: int) -> None:
    for pid in descendants():
        try:
            os.kill(pid, sig)
            if sig == signal.SIGTERM:
                os.kill(pid, signal.SIGCONT)  # a stopped process would not act on SIGTERM
        except OSError:
            pass


def run_command(command: list[str], mask: set[int | signal.Signals], libc: ctypes.CDLL) -> None:
    """In the forked child: restore what Python changed, drop capabilities, exec. Never returns."""
    try:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python ignores these; a shell must not inherit that
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        drop_capabilities(libc)
    except OSError as exc:
        os.write(2, f"operator-use: refusing to run the command: cannot drop capabilities ({exc})\n".encode())
        os._exit(126)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(2, f"operator-use: cannot run {command[0]}: {exc}\n".encode())
    os._exit(127)


def signal_namespace(sig: int) -> None:
    """As the init of a PID namespace: signal every other process in it (kill(-1) stays inside it)."""
    for each in (sig, signal.SIGCONT) if sig == signal.SIGTERM else (sig,):  # SIGCONT: see signal_descendants
        try:
            os.kill(-1, each)
        except OSError:
            pass


def contain(
    grace: float,
    report_fd: int,
    agent: int | None,
    command: list[str],
    mask: set[int | signal.Signals],
    libc: ctypes.CDLL,
    signal_all: Callable[[int], None],
) -> int:
    """Run the command and end everything below us as described above; return the command's wait status.
    `signal_all` signals everything below us; `agent` is None when our parent watches the agent."""
    main = os.fork()
    if main == 0:
        run_command(command, mask, libc)

    status: int | None = None
    ending_since: float | None = None
    leftovers = False

    def end_all() -> None:
        nonlocal ending_since
        if ending_since is None:
            ending_since = time.monotonic()
            signal_all(signal.SIGTERM)

    if agent is not None and os.getppid() != agent:  # the agent died before PR_SET_PDEATHSIG was in place
        end_all()
    while True:
        try:
            while True:
                pid, st = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                if pid == main:
                    status = st
        except ChildProcessError:
            break  # no child left, so nothing below us at all: orphans come to us, never to init
        if status is not None and ending_since is None:
            leftovers = True
            end_all()
        timeout = None
        if ending_since is not None:
            timeout = ending_since + grace - time.monotonic()
            if timeout <= 0:
                signal_all(signal.SIGKILL)
                timeout = KILL_REPEAT
        info = signal.sigtimedwait(WATCHED, timeout) if timeout is not None else signal.sigwaitinfo(WATCHED)
        if info is not None and info.si_signo != signal.SIGCHLD:
            end_all()

    if leftovers and report_fd >= 0:
        try:
            os.write(report_fd, b"L")
        except OSError:
            pass
    return status if status is not None else 1 << 8


def new_pid_namespace(libc: ctypes.CDLL) -> tuple[bool, bool]:
    """Make our next child the init of a new PID namespace (needs CAP_SYS_ADMIN). Returns whether that
    worked, and whether that init may mount its own /proc: in a new mount namespace, as a slave, so that
    the host's mounts still show up in it but nothing mounted in it propagates back to the host."""
    if libc.unshare(CLONE_NEWPID) != 0:
        return False, False
    private = libc.unshare(CLONE_NEWNS) == 0 and libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None) == 0
    return True, private


def run_namespace(
    grace: float,
    report_fd: int,
    agent: int,
    command: list[str],
    mask: set[int | signal.Signals],
    libc: ctypes.CDLL,
    own_proc: bool,
) -> int:
    """Fork the namespace's init, which contains the command; relay the agent's signals to it, and return
    the command's wait status once the namespace is empty."""
    alive_r, alive_w = os.pipe()  # EOF for the init: we are gone
    status_r, status_w = os.pipe()  # the init's last word: the command's wait status
    init = os.fork()
    if init == 0:
        code = 1
        try:
            os.close(alive_w)
            os.close(status_r)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # then the kernel empties the namespace
            if not select.select([alive_r], [], [], 0)[0]:  # else we died before that was in place
                if own_proc:
                    libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
                status = contain(grace, report_fd, None, command, mask, libc, signal_namespace)
                os.write(status_w, b"%d" % status)
                code = 0
        finally:
            os._exit(code)
    os.close(alive_r)
    os.close(status_w)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != agent:  # the agent died before PR_SET_PDEATHSIG was in place
        os.kill(init, signal.SIGTERM)
    while True:
        info = signal.sigwaitinfo(WATCHED)
        if info.si_signo != signal.SIGCHLD:
            os.kill(init, info.si_signo)  # it ends everything on any of them; a zombie ignores it
            continue
        pid, init_status = os.waitpid(init, os.WNOHANG)
        if pid:
            break
    said = os.read(status_r, 32)
    return int(said) if said else init_status


def supervise(grace: float, report_fd: int, agent: int, command: list[str]) -> int:
    """Run the command and end everything below us as described above; return the command's wait status."""
    libc = ctypes.CDLL(None, use_errno=True)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    in_namespace, own_proc = new_pid_namespace(libc)
    if in_namespace:
        return run_namespace(grace, report_fd, agent, command, mask, libc, own_proc)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        run_command(command, mask, libc)  # no containment to offer: be the command
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return contain(grace, report_fd, agent, command, mask, libc, signal_descendants)


def exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the command may have dumped core; we must not
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # only if the signal did not end us
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    if len(argv) < 6 or argv[4] != "--":
        os.write(2, b"usage: reaper.py GRACE REPORT_FD AGENT_PID -- COMMAND...\n")
        os._exit(2)
    report_fd = int(argv[2])
    if report_fd >= 0:
        os.set_inheritable(report_fd, False)  # only for us, not for the command
    exit_like(supervise(float(argv[1]), report_fd, int(argv[3]), argv[5:]))


if __name__ == "__main__":
    main(sys.argv)
