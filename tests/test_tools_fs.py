"""Behaviour of read_file / write_file / edit_file / list_files inside the workspace."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.tools import builtin_tools
from operator_use.tools import filesystem as fs
from operator_use.tools.filesystem import READ_CAP, filesystem_tools


def make_ctx(ws: Path) -> TurnContext:
    return TurnContext(address=Address(channel="test", chat_id="1"), user_id="u", session_key="test:1", workspace=ws)


@pytest.fixture
def call(tmp_path: Path):
    tools = {t.name: t for t in filesystem_tools()}
    ctx = make_ctx(tmp_path)

    async def _call(name: str, **args):
        return await tools[name].run(ctx, args)

    return _call


def test_registry_and_risks():
    tools = {t.name: t for t in builtin_tools()}
    assert {n: t.risk for n, t in tools.items()} == {
        "read_file": "low",
        "list_files": "low",
        "write_file": "medium",
        "edit_file": "medium",
        "run_shell": "high",
        "web_fetch": "medium",
        "web_search": "low",
    }
    for t in tools.values():
        assert t.schema.parameters["type"] == "object"
        assert not t.is_async or t.name in ("run_shell", "web_fetch", "web_search")


# --- write_file ---------------------------------------------------------------------------------------


async def test_write_creates_parents_and_overwrites(call, tmp_path: Path):
    res = await call("write_file", path="a/b/c.txt", content="héllo\n")
    assert not res.is_error and res.content.startswith("Created a/b/c.txt")
    assert (tmp_path / "a/b/c.txt").read_text(encoding="utf-8") == "héllo\n"
    res = await call("write_file", path="a/b/c.txt", content="")
    assert res.content.startswith("Overwrote") and (tmp_path / "a/b/c.txt").read_bytes() == b""


async def test_write_is_atomic_replace_keeping_mode(call, tmp_path: Path):
    f = tmp_path / "f.txt"
    f.write_text("old")
    f.chmod(0o640)
    ino = f.stat().st_ino
    assert not (await call("write_file", path="f.txt", content="new")).is_error
    assert f.read_text() == "new"
    assert f.stat().st_ino != ino  # a new inode renamed over the old name
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temp file left


async def test_failed_write_leaves_original_and_no_temp(call, tmp_path: Path, monkeypatch):
    (tmp_path / "f.txt").write_text("original")

    def boom(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fs.os, "replace", boom)
    res = await call("write_file", path="f.txt", content="new")
    assert res.is_error and res.content == "Error: 'f.txt': No space left on device"
    assert (tmp_path / "f.txt").read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("path", [".", "d", "d/"])
async def test_write_to_directory_fails(call, tmp_path: Path, path):
    (tmp_path / "d").mkdir()
    res = await call("write_file", path=path, content="x")
    assert res.is_error and "directory" in res.content


async def test_write_under_a_file_fails(call, tmp_path: Path):
    (tmp_path / "f").write_text("x")
    res = await call("write_file", path="f/g.txt", content="x")
    assert res.is_error and (tmp_path / "f").read_text() == "x"


# --- read_file ---------------------------------------------------------------------------------------


async def test_read_whole_and_windows(call, tmp_path: Path):
    (tmp_path / "n.txt").write_text("".join(f"line{i}\n" for i in range(1, 11)))
    assert (await call("read_file", path="n.txt")).content == "".join(f"line{i}\n" for i in range(1, 11))
    res = await call("read_file", path="n.txt", offset=3, limit=2)
    assert res.content == "line3\nline4\n[more lines follow; continue with offset=5]"
    assert (await call("read_file", path="n.txt", offset=10)).content == "line10\n"
    res = await call("read_file", path="n.txt", offset=11)
    assert res.is_error and "past the end" in res.content and "10 lines" in res.content


async def test_read_without_trailing_newline_and_empty(call, tmp_path: Path):
    (tmp_path / "a.txt").write_text("one\ntwo")
    assert (await call("read_file", path="a.txt", offset=2)).content == "two"
    (tmp_path / "e.txt").write_text("")
    assert (await call("read_file", path="e.txt")).content == "(empty file)"


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"abc\xff\xfe\xfd more text here"])
async def test_read_refuses_binary(call, tmp_path: Path, data):
    (tmp_path / "b.bin").write_bytes(data)
    res = await call("read_file", path="b.bin")
    assert res.is_error and "binary" in res.content


async def test_read_utf8_cut_at_sniff_boundary_is_text(call, tmp_path: Path):
    text = "a" * (fs._SNIFF - 1) + "é" + "\nend\n"  # the 2-byte char straddles the sniffed sample
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    assert (await call("read_file", path="u.txt")).content == text


async def test_read_caps_output_and_continues(call, tmp_path: Path):
    line = "x" * 99 + "\n"  # 100 bytes
    n = READ_CAP // 100 + 500
    (tmp_path / "big.txt").write_text(line * n)
    res = await call("read_file", path="big.txt")
    assert not res.is_error and "truncated" not in res.content  # Tool.max_output did not cut it
    body, note = res.content.rsplit("\n", 1)
    shown = body.count("\n") + 1
    assert shown == READ_CAP // 100 and note == f"[output capped at 256 KB; continue with offset={shown + 1}]"
    rest = await call("read_file", path="big.txt", offset=shown + 1)
    assert rest.content == line * (n - shown)


async def test_read_giant_single_line_is_cut(call, tmp_path: Path):
    (tmp_path / "min.js").write_text("y" * (READ_CAP + 10_000))
    res = await call("read_file", path="min.js")
    assert res.content.startswith("y" * 1000) and "line 1 is longer than 256 KB" in res.content
    assert len(res.content) < READ_CAP + 200


async def test_read_errors(call, tmp_path: Path):
    (tmp_path / "d").mkdir()
    res = await call("read_file", path="d")
    assert res.is_error and "list_files" in res.content
    res = await call("read_file", path="missing.txt")
    assert res.is_error and "does not exist" in res.content
    res = await call("read_file", path="a.txt", offset=0)
    assert res.is_error and "Invalid arguments" in res.content


# --- edit_file ---------------------------------------------------------------------------------------


async def test_edit_replaces_exactly_one(call, tmp_path: Path):
    f = tmp_path / "e.py"
    f.write_text("a = 1\nb = 2\nc = 3\n")
    f.chmod(0o755)
    res = await call("edit_file", path="e.py", old_text="b = 2", new_text="b = 20")
    assert res.content == "Edited e.py: replaced 1 occurrence at line 2"
    assert f.read_text() == "a = 1\nb = 20\nc = 3\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o755


async def test_edit_zero_or_many(call, tmp_path: Path):
    f = tmp_path / "e.txt"
    f.write_text("x\nx\n")
    res = await call("edit_file", path="e.txt", old_text="y", new_text="z")
    assert res.is_error and "not found" in res.content
    res = await call("edit_file", path="e.txt", old_text="x", new_text="z")
    assert res.is_error and "2 times" in res.content
    res = await call("edit_file", path="e.txt", old_text="", new_text="z")
    assert res.is_error
    res = await call("edit_file", path="e.txt", old_text="x", new_text="x")
    assert res.is_error
    assert f.read_text() == "x\nx\n"


async def test_edit_crlf_file(call, tmp_path: Path):
    f = tmp_path / "w.txt"
    f.write_bytes(b"one\r\ntwo\r\nthree\r\n")
    res = await call("edit_file", path="w.txt", old_text="one\ntwo", new_text="1\n2")
    assert not res.is_error, res
    assert f.read_bytes() == b"1\r\n2\r\nthree\r\n"


async def test_edit_refuses_non_utf8_and_missing(call, tmp_path: Path):
    (tmp_path / "l.txt").write_bytes(b"caf\xe9\n")
    res = await call("edit_file", path="l.txt", old_text="caf", new_text="bar")
    assert res.is_error and "UTF-8" in res.content
    assert (tmp_path / "l.txt").read_bytes() == b"caf\xe9\n"
    assert (await call("edit_file", path="nope.txt", old_text="a", new_text="b")).is_error


async def test_edit_size_cap(call, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(fs, "EDIT_CAP", 10)
    (tmp_path / "big.txt").write_text("a" * 11)
    res = await call("edit_file", path="big.txt", old_text="a", new_text="b")
    assert res.is_error and "too large" in res.content


# --- list_files --------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "src/pkg").mkdir(parents=True)
    (tmp_path / "src/pkg/mod.py").write_text("x" * 2048)
    (tmp_path / "src/main.py").write_text("print()\n")
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / ".hidden").write_text("")
    (tmp_path / ".git/objects").mkdir(parents=True)
    (tmp_path / ".git/objects/abc").write_text("blob")
    os.symlink("README.md", tmp_path / "readme-link")
    return tmp_path


async def test_list_top_level(call, tree: Path):
    res = await call("list_files")
    assert res.content.splitlines() == [".git/", ".hidden  0 B", "README.md  2 B", "readme-link -> README.md", "src/"]


async def test_list_recursive_skips_heavy_dirs(call, tree: Path):
    lines = (await call("list_files", recursive=True)).content.splitlines()
    assert "src/pkg/mod.py  2.0 KB" in lines and "src/main.py  8 B" in lines and "src/pkg/" in lines
    assert ".git/" in lines and not any(line.startswith(".git/objects") for line in lines)
    lines = (await call("list_files", path=".git", recursive=True)).content.splitlines()
    assert lines == ["objects/", "objects/abc  4 B"]  # asked for explicitly: listed


async def test_list_glob(call, tree: Path):
    lines = (await call("list_files", recursive=True, glob="*.py")).content.splitlines()
    assert lines == ["src/main.py  8 B", "src/pkg/mod.py  2.0 KB"]
    lines = (await call("list_files", recursive=True, glob="src/pkg/*")).content.splitlines()
    assert lines == ["src/pkg/mod.py  2.0 KB"]
    assert (await call("list_files", glob="*.rs")).content == "(no entries match the glob)"


async def test_list_cap_and_edge_cases(call, tmp_path: Path):
    for i in range(30):
        (tmp_path / f"f{i:02}").write_text("")
    res = await call("list_files", limit=10)
    lines = res.content.splitlines()
    assert len(lines) == 11 and lines[-1].startswith("[listing stopped after 10 entries")
    (tmp_path / "empty").mkdir()
    assert (await call("list_files", path="empty")).content == "(empty directory)"
    assert (await call("list_files", path="f00")).content == "f00  0 B"
    res = await call("list_files", path="nope")
    assert res.is_error and "does not exist" in res.content


async def test_list_does_not_follow_symlinked_dirs(call, tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real/x.txt").write_text("1")
    os.symlink("real", tmp_path / "alias")
    lines = (await call("list_files", recursive=True)).content.splitlines()
    assert lines == ["alias -> real", "real/", "real/x.txt  1 B"]
