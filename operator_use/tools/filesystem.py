"""File tools for the model: read_file, write_file, edit_file, list_files.

Every path goes through paths.py twice: `resolve_in_workspace` for the check and a clear message, then
the fd-based `open_*` helpers for the actual access, so a symlink swapped in between is not followed.
The functions are sync (plain file IO); Tool runs them in a worker thread.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..agent.tools import Tool, ToolError
from ..agent.turn import TurnContext
from ..security.prompt_files import check_write
from .paths import check_not_hardlinked, display_path, open_dir, open_regular_file, resolve_in_workspace, workspace_root

READ_CAP = 256 * 1024  # bytes of text returned by one read_file call
EDIT_CAP = 2 * 1024 * 1024  # edit_file loads the whole file
LIST_DEFAULT, LIST_MAX = 200, 1000
LIST_SCAN_MAX = 50_000  # entries examined by one listing, so a glob over a huge tree still returns
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache"}
_SNIFF = 8192
# Tools that change the file named by this argument: the approval gate guards the prompt files by it.
WRITES_PATH = {"write_file": "path", "edit_file": "path"}


# --- shared helpers -----------------------------------------------------------------------------


def _is_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multibyte character cut by the end of the sample is fine; anything earlier is not UTF-8.
        return exc.start < len(sample) - 3
    return False


def atomic_write(workspace: Path, path: Path, data: bytes, *, sandbox: bool = True, shown: str = "") -> bool:
    """Write via a temp file in the same directory + os.replace; return True if the file existed.

    Readers never see a half-written file, and replacing the directory entry never writes through a
    symlink or a hard link into a file elsewhere. The mode of an existing file is kept.
    """
    shown = shown or str(path)
    if path == workspace_root(workspace):
        raise ToolError(f"{shown!r} is a directory")
    with open_dir(workspace, path.parent, create=True, sandbox=sandbox, shown=shown) as dfd:
        name = path.name
        try:
            old = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None:
            if stat.S_ISDIR(old.st_mode):
                raise ToolError(f"{shown!r} is a directory")
            if sandbox and stat.S_ISLNK(old.st_mode):  # resolved paths have none: it appeared meanwhile
                raise ToolError(f"{shown!r}: refusing to replace a symbolic link that appeared while writing")
            if sandbox:
                check_not_hardlinked(old, shown)
        tmp = f".{secrets.token_hex(6)}.tmp"  # short: name + suffix could pass NAME_MAX
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dfd)
        try:
            try:
                if old is not None and stat.S_ISREG(old.st_mode):
                    os.fchmod(fd, stat.S_IMODE(old.st_mode))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
    return old is not None


def _read_text(workspace: Path, path: Path, cap: int, *, sandbox: bool, shown: str) -> str:
    """Whole file as strict UTF-8 (for edit_file)."""
    fd, st = open_regular_file(workspace, path, sandbox=sandbox, shown=shown)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > cap:
            raise ToolError(f"{shown!r} is too large to edit ({st.st_size} bytes, max {cap})")
        data = f.read(cap + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{shown!r} is not UTF-8 text; it cannot be edited with edit_file") from None


# --- read_file ----------------------------------------------------------------------------------


class ReadFileParams(BaseModel):
    path: str = Field(description="File path, relative to the workspace.")
    offset: int = Field(1, ge=1, description="First line to return (1-based).")
    limit: int | None = Field(None, ge=1, description="Maximum number of lines to return (default: all).")


def _read_file(ctx: TurnContext, p: ReadFileParams, sandbox: bool) -> str:
    path = resolve_in_workspace(ctx.workspace, p.path, must_exist=True, sandbox=sandbox)
    shown = display_path(ctx.workspace, path)
    fd, st = open_regular_file(ctx.workspace, path, sandbox=sandbox, shown=shown)
    with os.fdopen(fd, "rb") as f:
        if _is_binary(f.read(_SNIFF)):
            raise ToolError(
                f"{shown!r} looks binary or is not UTF-8 text ({st.st_size} bytes); "
                "inspect it with run_shell (e.g. `file`, `xxd | head`)"
            )
        f.seek(0)
        buf = bytearray()
        lineno, more, cut, ended_nl = 1, False, False, True
        while True:
            piece = f.readline(65536)  # bounded: a giant line arrives in pieces, never all at once
            if not piece:
                break
            if lineno >= p.offset:
                if p.limit is not None and lineno >= p.offset + p.limit:
                    more = True
                    break
                if len(buf) + len(piece) > READ_CAP:
                    cut = True
                    buf += piece[: READ_CAP - len(buf)]
                    break
                buf += piece
            ended_nl = piece.endswith(b"\n")
            if ended_nl:
                lineno += 1
    total = lineno - 1 if ended_nl else lineno  # only meaningful when we read to the end
    if not more and not cut and p.offset > max(total, 1):
        raise ToolError(f"offset {p.offset} is past the end of {shown!r} ({total} lines)")
    if cut:
        start = buf.rfind(b"\n") + 1
        if lineno > p.offset and start > 0:  # drop the partial line; the next call starts with it
            del buf[start:]
            note = f"[output capped at {READ_CAP // 1024} KB; continue with offset={lineno}]"
        else:
            note = f"[line {lineno} is longer than {READ_CAP // 1024} KB and was cut; use run_shell to see the rest]"
    elif more:
        note = f"[more lines follow; continue with offset={lineno}]"
    else:
        note = ""
    text = buf.decode("utf-8", errors="replace")
    if not text and not note:
        return "(empty file)"
    if note:
        text += ("" if text.endswith("\n") or not text else "\n") + note
    return text


# --- write_file / edit_file -------------------------------------------------------------------


class WriteFileParams(BaseModel):
    path: str = Field(description="File path, relative to the workspace. Parent directories are created.")
    content: str = Field(description="The complete new content of the file.")


def _write_file(ctx: TurnContext, p: WriteFileParams, sandbox: bool) -> str:
    path = resolve_in_workspace(ctx.workspace, p.path, sandbox=sandbox)
    shown = display_path(ctx.workspace, path)
    try:
        data = p.content.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError("content contains characters that cannot be encoded as UTF-8") from None
    check_write(ctx.workspace, path, shown)
    existed = atomic_write(ctx.workspace, path, data, sandbox=sandbox, shown=shown)
    return f"{'Overwrote' if existed else 'Created'} {shown} ({len(data)} bytes)"


class EditFileParams(BaseModel):
    path: str = Field(description="File path, relative to the workspace.")
    old_text: str = Field(description="Exact text to replace; must occur exactly once in the file.")
    new_text: str = Field(description="Replacement text.")


def _edit_file(ctx: TurnContext, p: EditFileParams, sandbox: bool) -> str:
    if not p.old_text:
        raise ToolError("old_text is empty; use write_file to create or overwrite a file")
    if p.old_text == p.new_text:
        raise ToolError("old_text and new_text are identical; nothing to change")
    path = resolve_in_workspace(ctx.workspace, p.path, must_exist=True, sandbox=sandbox)
    shown = display_path(ctx.workspace, path)
    text = _read_text(ctx.workspace, path, EDIT_CAP, sandbox=sandbox, shown=shown)
    old, new = p.old_text, p.new_text
    count = text.count(old)
    if count == 0 and "\r\n" in text and "\n" in old:
        # Models write '\n'; match a CRLF file anyway and keep its line endings.
        old, new = old.replace("\r\n", "\n").replace("\n", "\r\n"), new.replace("\r\n", "\n").replace("\n", "\r\n")
        count = text.count(old)
    if count == 0:
        raise ToolError(
            f"old_text was not found in {shown!r}; read the file and copy the text exactly "
            "(whitespace and indentation matter)"
        )
    if count > 1:
        raise ToolError(
            f"old_text occurs {count} times in {shown!r}; include more surrounding text so it matches exactly once"
        )
    at = text.index(old)
    check_write(ctx.workspace, path, shown)
    atomic_write(
        ctx.workspace, path, (text[:at] + new + text[at + len(old) :]).encode("utf-8"), sandbox=sandbox, shown=shown
    )
    return f"Edited {shown}: replaced 1 occurrence at line {text.count(chr(10), 0, at) + 1}"


# --- list_files ---------------------------------------------------------------------------------


class ListFilesParams(BaseModel):
    path: str = Field(".", description="Directory to list, relative to the workspace.")
    recursive: bool = Field(False, description="Also list subdirectories (skips .git, node_modules, ...).")
    glob: str | None = Field(
        None,
        description="Only entries whose name matches, e.g. '*.py'; a pattern "
        "containing '/' is matched against the relative path.",
    )
    limit: int = Field(LIST_DEFAULT, ge=1, le=LIST_MAX, description="Maximum number of entries.")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def _entry_line(rel: str, entry: os.DirEntry, dfd: int) -> tuple[str, bool]:
    """(line, is_dir) for one entry; symlinks are shown with their target, never followed."""
    st = entry.stat(follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        return rel + "/", True
    if stat.S_ISLNK(st.st_mode):
        try:
            return f"{rel} -> {os.readlink(entry.name, dir_fd=dfd)}", False
        except OSError:
            return f"{rel} -> ?", False
    if stat.S_ISREG(st.st_mode):
        return f"{rel}  {_human(st.st_size)}", False
    return f"{rel}  (special file)", False


def _walk(dfd: int, prefix: str, p: ListFilesParams, out: list[str], budget: list[int]) -> bool:
    """Append matching lines under dfd; return False once a cap is hit (stop everything)."""
    with os.scandir(dfd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        rel = prefix + entry.name
        try:
            line, is_dir = _entry_line(rel, entry, dfd)
        except OSError:
            continue  # vanished while listing
        pattern_target = rel if p.glob and "/" in p.glob else entry.name
        if p.glob is None or fnmatch.fnmatchcase(pattern_target, p.glob):
            if len(out) >= p.limit:
                return False
            out.append(line)
        if is_dir and p.recursive and entry.name not in SKIP_DIRS:
            try:
                child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                continue  # swapped for a symlink, or unreadable: skip rather than follow
            try:
                if not _walk(child, rel + "/", p, out, budget):
                    return False
            finally:
                os.close(child)
    return True


def _list_files(ctx: TurnContext, p: ListFilesParams, sandbox: bool) -> str:
    path = resolve_in_workspace(ctx.workspace, p.path, must_exist=True, sandbox=sandbox)
    shown = display_path(ctx.workspace, path)
    if path != workspace_root(ctx.workspace) and path.name:
        # Stat through the parent's fd too: a plain os.stat(path) would bypass the confined walk.
        with open_dir(ctx.workspace, path.parent, sandbox=sandbox, shown=shown) as pfd:
            st = os.stat(path.name, dir_fd=pfd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            return f"{shown}  {_human(st.st_size)}" if stat.S_ISREG(st.st_mode) else shown
    out: list[str] = []
    with open_dir(ctx.workspace, path, sandbox=sandbox, shown=shown) as dfd:
        complete = _walk(dfd, "", p, out, [LIST_SCAN_MAX])
    if not complete:
        out.append(f"[listing stopped after {len(out)} entries; narrow it with path or glob]")
    if not out:
        return "(no entries match the glob)" if p.glob else "(empty directory)"
    return "\n".join(out)


# --- registry -----------------------------------------------------------------------------------


def _bind(func: Callable[[TurnContext, Any, bool], str], sandbox: bool) -> Callable[[TurnContext, Any], str]:
    """Fix `sandbox` and turn OS errors (disk full, permission denied...) into messages for the model."""

    def run(ctx: TurnContext, p: Any) -> str:
        try:
            return func(ctx, p, sandbox)
        except OSError as exc:
            raise ToolError(f"{p.path!r}: {exc.strerror or exc}") from None

    return run


def filesystem_tools(sandbox: bool = True) -> list[Tool]:
    """The file tools; sandbox=False lets them reach the whole host (per-agent config)."""
    where = "relative to the workspace" if sandbox else "relative to the workspace, or absolute"
    return [
        Tool(
            "read_file",
            f"Read a UTF-8 text file ({where}). Returns up to {READ_CAP // 1024} KB; use "
            "offset/limit (lines) for large files. Binary files are refused.",
            ReadFileParams,
            _bind(_read_file, sandbox),
            risk="low",
            max_output=READ_CAP + 1024,
        ),
        Tool(
            "write_file",
            f"Create or overwrite a text file ({where}) with the given content. Parent "
            "directories are created. The write is atomic.",
            WriteFileParams,
            _bind(_write_file, sandbox),
            risk="medium",
        ),
        Tool(
            "edit_file",
            "Replace exactly one occurrence of old_text with new_text in a text file. Fails if "
            "old_text occurs zero or several times.",
            EditFileParams,
            _bind(_edit_file, sandbox),
            risk="medium",
        ),
        Tool(
            "list_files",
            f"List a directory ({where}): directories end with '/', files show their size, symlinks their target.",
            ListFilesParams,
            _bind(_list_files, sandbox),
            risk="low",
            max_output=64_000,
        ),
    ]
