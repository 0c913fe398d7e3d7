"""The unprivileged user a root agent's sandboxed commands run as, and the workspace access it is given.

Without capabilities, uid 0 still passes every check the kernel makes by uid alone: it could write
/proc/sys (kernel.core_pattern runs a program as root on the host: full root), /proc/sysrq-trigger,
read root-only files such as /etc/shadow and root's home, and talk to root-owned Unix sockets
(docker.sock, systemd), which trust uid 0. So in the sandbox a root agent's command runs as `nobody`
(SANDBOX_UID), and the workspace is made writable for that user with POSIX ACLs: an entry on everything
in it, and a default entry on every directory, so that what the agent creates there later inherits it.
Files keep their owner and mode; what the command creates belongs to `nobody`.

Hard-linked files, symbolic links, special files and other file systems mounted inside the workspace
are left alone (a hard link could be another name for a file elsewhere, /etc/shadow say).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct

log = logging.getLogger(__name__)

SANDBOX_UID = SANDBOX_GID = 65534  # nobody / nogroup

ACCESS, DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_ENTRY = struct.Struct("<HHI")  # tag, permissions, id: the kernel's posix_acl_xattr_entry
_R, _W, _X = 4, 2, 1

Entry = tuple[int, int, int]  # (tag, perm, id)


def parse(blob: bytes) -> list[Entry]:
    if len(blob) < 4 or struct.unpack_from("<I", blob)[0] != _VERSION or (len(blob) - 4) % _ENTRY.size:
        raise ValueError("not a POSIX ACL")
    return [_ENTRY.unpack_from(blob, off) for off in range(4, len(blob), _ENTRY.size)]


def pack(entries: list[Entry]) -> bytes:
    # The kernel wants them ordered by tag, then id.
    return struct.pack("<I", _VERSION) + b"".join(_ENTRY.pack(*e) for e in sorted(entries, key=lambda e: (e[0], e[2])))


def from_mode(mode: int) -> list[Entry]:
    """The ACL a file without one has: its mode bits."""
    return [(USER_OBJ, (mode >> 6) & 7, _NO_ID), (GROUP_OBJ, (mode >> 3) & 7, _NO_ID), (OTHER, mode & 7, _NO_ID)]


def with_user(entries: list[Entry], uid: int, perm: int) -> list[Entry]:
    """`entries` plus `uid` with at least `perm`, and the mask recomputed so that it takes effect."""
    kept = [e for e in entries if e[0] != MASK and not (e[0] == USER and e[2] == uid)]
    old = next((e[1] for e in entries if e[0] == USER and e[2] == uid), 0)
    kept.append((USER, old | perm, uid))
    mask = 0
    for tag, p, _ in kept:
        if tag in (USER, GROUP_OBJ, GROUP):
            mask |= p
    return [*kept, (MASK, mask, _NO_ID)]


def _read(target: int | str, name: str) -> bytes | None:
    try:
        return os.getxattr(target, name)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


def _grant(fd: int, st: os.stat_result, uid: int) -> None:
    is_dir = stat.S_ISDIR(st.st_mode)
    perm = _R | _W | (_X if is_dir or st.st_mode & 0o111 else 0)
    old = _read(fd, ACCESS)
    access = pack(with_user(parse(old) if old else from_mode(st.st_mode), uid, perm))
    if access != old:
        os.setxattr(fd, ACCESS, access)
    if is_dir:
        old_default = _read(fd, DEFAULT)
        default = pack(with_user(parse(old_default) if old_default else from_mode(st.st_mode), uid, _R | _W | _X))
        if default != old_default:
            os.setxattr(fd, DEFAULT, default)


def grant_workspace(workspace: str, uid: int = SANDBOX_UID) -> int:
    """Give `uid` read and write access to the directory tree `workspace` (see the module's docstring).
    Raises OSError if the workspace itself cannot be given access; returns how many entries inside could
    not be (their error is logged)."""
    top = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        top_st = os.fstat(top)
        _grant(top, top_st, uid)
    finally:
        os.close(top)
    failed = 0
    # fwalk works on directory descriptors and never follows a symlink: the tree may change meanwhile.
    for _, dirnames, filenames, dirfd in os.fwalk(workspace, follow_symlinks=False):
        for name in list(dirnames):
            try:
                if os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_dev != top_st.st_dev:
                    dirnames.remove(name)  # another file system mounted here: not ours to change
            except OSError:
                dirnames.remove(name)
        for name in [*dirnames, *filenames]:
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if not (stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)):
                    continue
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dirfd
                )
                try:
                    now = os.fstat(fd)
                    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) and (
                        stat.S_ISDIR(now.st_mode) or now.st_nlink == 1
                    ):
                        _grant(fd, now, uid)
                finally:
                    os.close(fd)
            except OSError as exc:
                failed += 1
                if failed <= 3:
                    log.warning("the sandbox's user cannot be given access to %s in the workspace: %s", name, exc)
    return failed


def permits(path: str, want: int, uid: int = SANDBOX_UID, gid: int = SANDBOX_GID) -> bool:
    """Whether `uid` (without supplementary groups) has the `want` bits (4 r, 2 w, 1 x) on `path`.
    Approximate in the safe direction: an ACL group entry that would allow it is not looked at."""
    try:
        st = os.stat(path)
        acl = _read(path, ACCESS)
    except OSError:
        return False
    if st.st_uid == uid:
        return (st.st_mode >> 6) & want == want
    if acl is not None:
        entries = parse(acl)
        mask = next((p for tag, p, _ in entries if tag == MASK), 7)
        named = next((p for tag, p, i in entries if tag == USER and i == uid), None)
        if named is not None:
            return named & mask & want == want
    if st.st_gid == gid:
        return (st.st_mode >> 3) & want == want
    return st.st_mode & want == want
