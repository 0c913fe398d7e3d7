"""Keep file tools inside the agent's workspace.

Two layers, because either alone has holes:

1. `resolve_in_workspace` checks the *string* (control characters, lengths) and the *resolved* path
   (`os.path.realpath`, which follows every symlink and `..` the way the kernel would) against the real
   workspace root. This gives the model clear error messages.
2. `open_dir` / `open_file` then reach the resolved path again from an fd of the workspace root, one
   component at a time with O_NOFOLLOW. The resolved path contains no symlinks, so a symlink met now was
   swapped in after the check (TOCTOU, e.g. by a background process of run_shell): the open fails
   instead of following it out of the workspace.

What is deliberately NOT done:
- No `~` expansion and no Unicode normalization. The kernel compares bytes, so the name we check must be
  the name we open; NFKC would even turn the fullwidth '．．／' into a real '../'. Lookalikes stay
  literal names inside the workspace.
- Bind mounts inside the workspace are trusted (creating one needs root).

Hard links: a directory entry cannot tell where the other names of a file live, so a regular file with
st_nlink > 1 is refused for reading and writing when sandboxed. Trade-off: legitimate hard links inside
the workspace (pnpm stores, `cp -l`, local git clones) are refused too; copying the file breaks the link.

POSIX only (O_NOFOLLOW, dir_fd).
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..agent.tools import ToolError

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX on common filesystems

# Invisible characters that reorder how a path is displayed (Trojan Source style); never needed in a name.
_BIDI = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def workspace_root(workspace: Path) -> Path:
    """The real workspace path: every check compares against this, never the configured spelling."""
    return Path(os.path.realpath(workspace))


def display_path(workspace: Path, path: Path) -> str:
    """How a path is shown to the model: relative inside the workspace, absolute outside."""
    root = workspace_root(workspace)
    if path == root:
        return "."
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _check_string(user_path: str) -> str:
    if not isinstance(user_path, str):
        raise ToolError("path must be a string")
    if user_path == "":
        raise ToolError("path is empty; use '.' for the workspace itself")
    if "\x00" in user_path:
        raise ToolError("path contains a NUL byte")
    for ch in user_path:
        cat = unicodedata.category(ch)
        # Cc: C0/C1 controls incl. newline, tab, ESC, DEL; Zl/Zp: line separators; Cs: lone surrogates.
        if cat in ("Cc", "Zl", "Zp", "Cs") or ch in _BIDI:
            raise ToolError(f"path contains a control or invisible character (U+{ord(ch):04X})")
    # Treat Windows separators as separators so that '..\\..\\x' is judged as the '../../x' it means,
    # not as one odd file name that would escape once the tree is copied to Windows.
    return user_path.replace("\\", "/")


def _check_lengths(path: str) -> None:
    raw = os.fsencode(path)
    if len(raw) > MAX_PATH_BYTES:
        raise ToolError(f"path is too long ({len(raw)} bytes, max {MAX_PATH_BYTES})")
    for part in raw.split(b"/"):
        if len(part) > MAX_NAME_BYTES:
            raise ToolError(f"a path component is too long ({len(part)} bytes, max {MAX_NAME_BYTES})")


def resolve_in_workspace(workspace: Path, user_path: str, *, must_exist: bool = False, sandbox: bool = True) -> Path:
    """Resolve a model-supplied path to a real absolute path, refusing anything outside the workspace.

    Relative paths are taken from the workspace; absolute paths are allowed when they land inside it.
    With sandbox=False only the string checks remain (the agent is trusted with the whole host).
    """
    path = _check_string(user_path)
    _check_lengths(path)
    root = workspace_root(workspace)
    candidate = path if os.path.isabs(path) else os.path.join(root, path)  # no expanduser, ever
    try:
        resolved = Path(os.path.realpath(candidate))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurd symlink chains
        raise ToolError(f"cannot resolve {user_path!r}: {exc}") from None
    _check_lengths(str(resolved))
    if sandbox and not resolved.is_relative_to(root):
        raise ToolError(f"{user_path!r} resolves outside the workspace; only paths inside it are allowed")
    try:
        st = os.lstat(resolved)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ToolError(f"cannot access {user_path!r}: {exc.strerror}") from None
    if must_exist and st is None:
        raise ToolError(f"{user_path!r} does not exist")
    if sandbox and st is not None:
        check_not_hardlinked(st, user_path)
    return resolved


def check_not_hardlinked(st: os.stat_result, shown: str) -> None:
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise ToolError(
            f"{shown!r} is a hard link ({st.st_nlink} names for one file; the others may be outside the "
            "workspace), so it is refused. Copy it to a new file to work on it."
        )


def _os_error(exc: OSError, shown: str) -> ToolError:
    if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (EMLINK on FreeBSD)
        return ToolError(f"{shown!r}: refusing to follow a symbolic link that appeared while opening it")
    if exc.errno == errno.ENOENT:
        return ToolError(f"{shown!r} does not exist")
    if exc.errno == errno.ENOTDIR:
        return ToolError(f"{shown!r}: a component of the path is not a directory")
    if exc.errno == errno.EISDIR:
        return ToolError(f"{shown!r} is a directory")
    return ToolError(f"{shown!r}: {exc.strerror or exc}")


def _parts_under(root: Path, path: Path, shown: str) -> tuple[str, ...]:
    if not path.is_relative_to(root):
        raise ToolError(f"{shown!r} resolves outside the workspace; only paths inside it are allowed")
    parts = path.relative_to(root).parts
    if any(p in ("", ".", "..") for p in parts):  # realpath never leaves these; be sure anyway
        raise ToolError(f"{shown!r} is not a normalized path")
    return parts


@contextmanager
def open_dir(
    workspace: Path, directory: Path, *, create: bool = False, sandbox: bool = True, shown: str | None = None
) -> Iterator[int]:
    """An fd for `directory` (already resolved), reached without following any symlink when sandboxed.

    With create=True missing directories are made, each one inside the fd of its parent.
    """
    shown = shown or str(directory)
    try:
        if not sandbox:
            if create:
                os.makedirs(directory, exist_ok=True)
            fd = os.open(directory, _DIR_FLAGS)
        else:
            root = workspace_root(workspace)
            parts = _parts_under(root, directory, shown)
            fd = os.open(root, _DIR_FLAGS)
            for name in parts:
                fd = _step(fd, name, create)  # closes the parent fd, also when it fails
    except OSError as exc:
        raise _os_error(exc, shown) from None
    try:
        yield fd
    finally:
        os.close(fd)


def _step(fd: int, name: str, create: bool) -> int:
    """Open child directory `name` of fd with O_NOFOLLOW, closing fd. Raises OSError."""
    try:
        try:
            child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o777, dir_fd=fd)
            except FileExistsError:
                pass  # created concurrently; the O_NOFOLLOW open below still checks what it is
            child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    return child


def open_file(
    workspace: Path, path: Path, flags: int, mode: int = 0o666, *, sandbox: bool = True, shown: str | None = None
) -> int:
    """os.open for a resolved path, with O_NOFOLLOW on the final component when sandboxed."""
    shown = shown or str(path)
    if sandbox and path == workspace_root(workspace):
        raise ToolError(f"{shown!r} is a directory")
    with open_dir(workspace, path.parent, sandbox=sandbox, shown=shown) as dfd:
        extra = os.O_CLOEXEC | (os.O_NOFOLLOW if sandbox else 0)
        try:
            return os.open(path.name, flags | extra, mode, dir_fd=dfd)
        except OSError as exc:
            raise _os_error(exc, shown) from None


def open_regular_file(
    workspace: Path, path: Path, *, sandbox: bool = True, shown: str | None = None
) -> tuple[int, os.stat_result]:
    """Open a resolved path for reading; refuse anything but a regular file with a single name.

    O_NONBLOCK so that a FIFO planted in the workspace cannot hang the open; the checks use fstat on
    the opened fd, so they are about the very file we will read.
    """
    shown = shown or str(path)
    fd = open_file(workspace, path, os.O_RDONLY | os.O_NONBLOCK, sandbox=sandbox, shown=shown)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{shown!r} is a directory; use list_files")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{shown!r} is not a regular file (device, FIFO or socket)")
        if sandbox:
            check_not_hardlinked(st, shown)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st
