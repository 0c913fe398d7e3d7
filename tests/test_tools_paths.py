"""Path traversal suite: no path string may let a file tool read, list or change anything outside
the workspace. Layout per test: tmp/ws (workspace), tmp/outside (secrets), tmp/ws2 (prefix sibling)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from operator_use.agent.tools import ToolError
from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.tools.filesystem import atomic_write, filesystem_tools
from operator_use.tools.paths import open_regular_file, resolve_in_workspace

SECRET = "TOP-SECRET-CONTENT"
MARKER = "marker-outside-only.txt"
ETC_PROBE = "/etc/operator-use-escape-probe"  # never write to real system files, even in a failing test


def make_ctx(ws: Path) -> TurnContext:
    return TurnContext(address=Address(channel="test", chat_id="1"), user_id="u", session_key="test:1", workspace=ws)


@pytest.fixture
def layout(tmp_path: Path):
    ws, out, ws2 = tmp_path / "ws", tmp_path / "outside", tmp_path / "ws2"
    for d in (ws, out / "nested", ws2):
        d.mkdir(parents=True)
    (out / "secret.txt").write_text(SECRET)
    (out / "nested" / "inner.txt").write_text(SECRET)
    (out / MARKER).write_text(SECRET)
    (ws2 / "secret.txt").write_text(SECRET)
    return tmp_path, ws, out


def snapshot(tmp: Path, ws: Path) -> dict[str, tuple]:
    """Everything outside the workspace under tmp (content, mode, mtime, links) plus /etc/passwd."""
    snap: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(tmp):
        if Path(dirpath) == ws or Path(dirpath).is_relative_to(ws):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p == ws:
                continue
            st = p.lstat()
            if p.is_symlink():
                snap[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                snap[str(p)] = ("file", p.read_bytes(), st.st_mode, st.st_mtime_ns, st.st_nlink)
            else:
                snap[str(p)] = ("dir", st.st_mode)
    snap["/etc/passwd"] = ("file", hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest())
    return snap


@dataclass
class Case:
    id: str
    path: str | Callable[[Path, Path, Path], str]  # str, or f(tmp, ws, out) for absolute paths
    setup: Callable[[Path, Path, Path], None] | None = None
    refused: bool = True  # False: a literal name that must simply stay inside the workspace
    write_path: str | Callable[[Path, Path, Path], str] | None = None


def _link(target_fn, name):
    def setup(tmp, ws, out):
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target_fn(tmp, ws, out), ws / name)

    return setup


def _hardlink(tmp, ws, out):
    os.link(out / "secret.txt", ws / "hard.txt")


def _chain(tmp, ws, out):
    os.symlink(out / "secret.txt", ws / "l2")
    os.symlink(ws / "l2", ws / "l1")


def _loop(tmp, ws, out):
    os.symlink(ws / "loop2", ws / "loop1")
    os.symlink(ws / "loop1", ws / "loop2")


def _sub(tmp, ws, out):
    (ws / "sub").mkdir()


CASES = [
    Case("dotdot", "../outside/secret.txt"),
    Case("dotdot-dir", "../outside/"),
    Case("dotdot-dotdot", lambda t, w, o: "../../" + t.name + "/outside/secret.txt"),
    Case("a-dotdot-dotdot", "a/../../outside/secret.txt"),
    Case("existing-sub-dotdot", "sub/../../outside/secret.txt", _sub),
    Case("dot-slash-dotdot", "./../outside/secret.txt"),
    Case("many-dotdots", "../" * 40 + "etc/passwd", write_path="../" * 40 + ETC_PROBE.lstrip("/")),
    Case("bare-dotdot", ".."),
    Case("abs-outside", lambda t, w, o: str(o / "secret.txt")),
    Case("abs-etc-passwd", "/etc/passwd", write_path=ETC_PROBE),
    Case("double-slash-etc", "//etc/passwd", write_path="/" + ETC_PROBE),
    Case("abs-dotdot-etc", "/../../etc/passwd", write_path="/../.." + ETC_PROBE),
    Case("abs-ws-dotdot", lambda t, w, o: f"{w}/../outside/secret.txt"),
    Case("abs-prefix-sibling", lambda t, w, o: f"{w}2/secret.txt"),
    Case("proc-self-root", "/proc/self/root/etc/passwd", write_path="/proc/self/root" + ETC_PROBE),
    Case(
        "symlink-dir-etc",
        "etc/passwd",
        _link(lambda t, w, o: "/etc", "etc"),
        write_path="etc/operator-use-escape-probe",
    ),
    Case("symlink-dir-outside", "out/secret.txt", _link(lambda t, w, o: o, "out")),
    Case("symlink-file-outside", "link.txt", _link(lambda t, w, o: o / "secret.txt", "link.txt")),
    Case("symlink-relative", "rel/secret.txt", _link(lambda t, w, o: "../outside", "rel")),
    Case("symlink-dangling-outside", "dangle.txt", _link(lambda t, w, o: o / "created-by-escape.txt", "dangle.txt")),
    Case("symlink-chain", "l1", _chain),
    Case("symlink-in-middle", "d/x/secret.txt", _link(lambda t, w, o: o, "d/x")),
    Case("symlink-then-dotdot", "deep/../secret.txt", _link(lambda t, w, o: o / "nested", "deep")),
    Case(
        "symlink-to-proc-root",
        "proc/etc/passwd",
        _link(lambda t, w, o: "/proc/self/root", "proc"),
        write_path="proc/etc/operator-use-escape-probe",
    ),
    Case("symlink-loop", "loop1/x", _loop),
    Case("hardlink-outside", "hard.txt", _hardlink),
    Case("backslash-dotdot", "..\\outside\\secret.txt"),
    Case("backslash-dotdot-dotdot", "..\\..\\etc\\passwd", write_path="..\\..\\etc\\operator-use-escape-probe"),
    Case("mixed-slashes", "sub\\..\\..\\outside/secret.txt", _sub),
    Case("nul-byte", "../outside/secret.txt\x00.png"),
    Case("nul-inside", "a\x00b"),
    Case("newline", "a\n../outside/secret.txt"),
    Case("tab-escape-del", "a\t\x1b[2J\x7f"),
    Case("c1-control", "a\x85b"),
    Case("rtl-override", "\u202e../outside/secret.txt"),
    Case("line-separator", "a\u2028b"),
    Case("lone-surrogate", "\udc2e\udc2e/outside"),
    Case("very-long-path", "a/" * 2100 + "x"),
    Case("long-component", "x" * 256),
    Case("long-component-utf8", "é" * 128),  # 256 bytes in UTF-8
    Case("empty", ""),
    # Literal names: they look like traversal to a human or to a normalizer, but stay inside.
    Case("fullwidth-dots", "．．／outside/secret.txt", refused=False),
    Case("fullwidth-dots-only", "．．／．．／etc/passwd", refused=False),
    Case("one-dot-leader", "\u2024\u2024/outside/secret.txt", refused=False),
    Case("two-dot-leader", "\u2025/outside/secret.txt", refused=False),
    Case("combining-dots", ".\u0301./outside/secret.txt", refused=False),
    Case("presentation-colon", "\ufe30/outside/secret.txt", refused=False),
    Case("url-encoded", "%2e%2e/outside/secret.txt", refused=False),
    Case("url-encoded-slash", "%2e%2e%2foutside%2fsecret.txt", refused=False),
    Case("tilde", "~/secret.txt", refused=False),
    Case("tilde-dotdot", "~/../outside/secret.txt", refused=False),
    Case("tilde-user", "~root/.bashrc", refused=False),
    Case("three-dots", ".../outside/secret.txt", refused=False),
    Case("file-url", "file:///etc/passwd", refused=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_no_escape(layout, case: Case):
    tmp, ws, out = layout
    if case.setup:
        case.setup(tmp, ws, out)
    path = case.path(tmp, ws, out) if callable(case.path) else case.path
    wpath = case.write_path or case.path
    wpath = wpath(tmp, ws, out) if callable(wpath) else wpath
    tools = {t.name: t for t in filesystem_tools()}
    ctx = make_ctx(ws)
    before = snapshot(tmp, ws)

    read = await tools["read_file"].run(ctx, {"path": path})
    assert SECRET not in read.content
    assert "root:" not in read.content  # /etc/passwd
    listing = await tools["list_files"].run(ctx, {"path": path, "recursive": True})
    # Error messages echo the path, so look for what only a listing would show: entries with sizes.
    assert MARKER not in listing.content and "inner.txt" not in listing.content
    assert not re.search(r"(secret\.txt|passwd|hostname)  \d", listing.content)
    edit = await tools["edit_file"].run(ctx, {"path": path, "old_text": SECRET, "new_text": "PWNED"})
    write = await tools["write_file"].run(ctx, {"path": wpath, "content": "PWNED"})

    assert snapshot(tmp, ws) == before, "something outside the workspace changed"
    assert not os.path.lexists(ETC_PROBE)
    if case.refused:
        assert read.is_error and listing.is_error and edit.is_error and write.is_error, (read, listing, write)
    else:
        # A literal name: the write lands inside the workspace as a real file, not through a link.
        assert not write.is_error, write
        written = [Path(d, f) for d, _, fs in os.walk(ws) for f in fs if Path(d, f).read_bytes() == b"PWNED"]
        assert len(written) == 1 and written[0].resolve().is_relative_to(ws.resolve())


def test_suite_is_big_enough():
    assert len(CASES) >= 30


# --- allowed paths ------------------------------------------------------------------------------------


def test_absolute_inside_is_allowed(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    assert resolve_in_workspace(tmp_path, str(tmp_path / "a.txt")) == (tmp_path / "a.txt").resolve()


def test_dotdot_that_stays_inside_is_allowed(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    assert resolve_in_workspace(tmp_path, "sub/../b.txt") == tmp_path.resolve() / "b.txt"


def test_tilde_is_a_literal_name(tmp_path: Path):
    assert resolve_in_workspace(tmp_path, "~") == tmp_path.resolve() / "~"


def test_backslash_is_a_separator(tmp_path: Path):
    assert resolve_in_workspace(tmp_path, "sub\\f.txt") == tmp_path.resolve() / "sub" / "f.txt"


def test_dot_is_the_workspace(tmp_path: Path):
    assert resolve_in_workspace(tmp_path, ".") == tmp_path.resolve()


def test_must_exist(tmp_path: Path):
    with pytest.raises(ToolError, match="does not exist"):
        resolve_in_workspace(tmp_path, "nope.txt", must_exist=True)


async def test_symlink_inside_pointing_inside_is_allowed(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f.txt").write_text("hello")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    os.symlink("real/f.txt", tmp_path / "f-link.txt")
    tools = {t.name: t for t in filesystem_tools()}
    ctx = make_ctx(tmp_path)
    assert (await tools["read_file"].run(ctx, {"path": "alias/f.txt"})).content == "hello"
    res = await tools["write_file"].run(ctx, {"path": "f-link.txt", "content": "bye"})
    assert not res.is_error
    assert (tmp_path / "real" / "f.txt").read_text() == "bye"
    assert (tmp_path / "f-link.txt").is_symlink()  # the link itself is kept


async def test_workspace_reached_through_a_symlink(tmp_path: Path):
    real = tmp_path / "real-ws"
    real.mkdir()
    os.symlink(real, tmp_path / "ws-link")
    ws = tmp_path / "ws-link"
    tools = {t.name: t for t in filesystem_tools()}
    ctx = make_ctx(ws)
    assert not (await tools["write_file"].run(ctx, {"path": str(ws / "a.txt"), "content": "x"})).is_error
    assert (real / "a.txt").read_text() == "x"
    assert (await tools["read_file"].run(ctx, {"path": "a.txt"})).content == "x"


async def test_sandbox_false_lifts_confinement(layout):
    _tmp, ws, _out = layout
    tools = {t.name: t for t in filesystem_tools(sandbox=False)}
    res = await tools["read_file"].run(make_ctx(ws), {"path": "../outside/secret.txt"})
    assert res.content == SECRET
    with pytest.raises(ToolError):  # string checks still apply
        resolve_in_workspace(ws, "a\x00b", sandbox=False)


# --- races (TOCTOU) -------------------------------------------------------------------------------------


def test_directory_swapped_for_symlink_after_check(layout):
    tmp, ws, out = layout
    (ws / "d").mkdir()
    (ws / "d" / "secret.txt").write_text("mine")
    resolved = resolve_in_workspace(ws, "d/secret.txt", must_exist=True)
    (ws / "d").rename(ws / "d-old")
    os.symlink(out, ws / "d")  # the attacker's swap, between check and use
    before = snapshot(tmp, ws)
    with pytest.raises(ToolError, match=r"symbolic link|not a directory"):
        open_regular_file(ws, resolved)
    with pytest.raises(ToolError):
        atomic_write(ws, resolved, b"PWNED")
    assert snapshot(tmp, ws) == before


def test_final_component_swapped_for_symlink_after_check(layout):
    tmp, ws, out = layout
    (ws / "f.txt").write_text("mine")
    resolved = resolve_in_workspace(ws, "f.txt", must_exist=True)
    (ws / "f.txt").unlink()
    os.symlink(out / "secret.txt", ws / "f.txt")
    before = snapshot(tmp, ws)
    with pytest.raises(ToolError, match="symbolic link"):
        open_regular_file(ws, resolved)
    with pytest.raises(ToolError, match="symbolic link"):
        atomic_write(ws, resolved, b"PWNED")
    assert snapshot(tmp, ws) == before


def test_hardlink_created_after_check_is_refused_on_open(layout):
    _tmp, ws, out = layout
    resolved = resolve_in_workspace(ws, "h.txt")
    os.link(out / "secret.txt", ws / "h.txt")
    with pytest.raises(ToolError, match="hard link"):
        open_regular_file(ws, resolved)


async def test_fifo_does_not_hang_read(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    tool = {t.name: t for t in filesystem_tools()}["read_file"]
    res = await tool.run(make_ctx(tmp_path), {"path": "pipe"})
    assert res.is_error and "not a regular file" in res.content
