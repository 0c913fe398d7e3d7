from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operator_use.messages import AIMessage, HumanMessage, ToolCall, ToolMessage
from operator_use.session import store as session_store
from operator_use.session.store import SessionStore, SessionWriteError
from operator_use.session.truncate import estimate_tokens, fit_to_budget

from .support.disk import FileSizeLimit, TinyDisk, tiny_tmpfs


async def test_a_history_whose_writer_was_killed_mid_line_loads(tmp_path: Path) -> None:
    """A real writer process is SIGKILLed after writing half a line; the history still loads and grows."""
    script = textwrap.dedent(f"""
        import asyncio, os, time
        from pathlib import Path
        from operator_use.session.store import SessionStore
        from operator_use.messages import HumanMessage, AIMessage

        async def main():
            store = SessionStore(Path({str(tmp_path)!r}))
            await store.append("test:c1", [HumanMessage(content="one"), AIMessage(content="two")])
            line = HumanMessage(content="three " * 50).model_dump_json().encode()
            with open(store.path_for("test:c1"), "ab") as f:
                f.write(line[: len(line) // 2])
                f.flush()
            print("ready", flush=True)
            while True:
                time.sleep(1)  # parked until the test kills us; a plain script, not async code

        asyncio.run(main())
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE, text=True
    )
    try:
        # Blocks until the writer says the half line is on disk (or exits): no timing involved.
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    store = SessionStore(tmp_path)
    session = await store.load("test:c1")
    assert [m.content for m in session.messages] == ["one", "two"]
    await store.append("test:c1", [HumanMessage(content="four")])
    reloaded = SessionStore(tmp_path)
    assert [m.content for m in (await reloaded.load("test:c1")).messages] == ["one", "two", "four"]


async def test_corrupt_middle_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    path = store.path_for("x:1")
    path.parent.mkdir(parents=True)
    path.write_text(
        HumanMessage(content="a").model_dump_json() + "\n{not json\n" + AIMessage(content="b").model_dump_json() + "\n"
    )
    assert [m.content for m in (await store.load("x:1")).messages] == ["a", "b"]


async def test_keys_with_threads_and_odd_characters_round_trip(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    key = "telegram:-100123:42/../x"
    await store.append(key, [HumanMessage(content="hi")])
    assert store.path_for(key).parent == store.sessions_dir
    assert [s.key for s in store.list_sessions()] == [key]
    archived = await store.archive(key)
    assert archived is not None and archived.exists()
    assert (await store.load(key)).messages == []


def _conversation(rng: random.Random, turns: int) -> list:  # type: ignore[type-arg]
    out: list = []  # type: ignore[type-arg]
    n = 0
    for _t in range(turns):
        out.append(HumanMessage(content="q" * rng.randint(1, 400)))
        for _ in range(rng.randint(0, 3)):
            calls = [
                ToolCall(id=f"c{(n := n + 1)}", name="t", arguments={"x": "y" * rng.randint(0, 300)})
                for _ in range(rng.randint(1, 3))
            ]
            out.append(AIMessage(content="thinking" * rng.randint(0, 3), tool_calls=calls))
            out.extend(ToolMessage(tool_call_id=c.id, name="t", content="r" * rng.randint(1, 2000)) for c in calls)
        out.append(AIMessage(content="a" * rng.randint(1, 600)))
    return out


def test_truncation_never_splits_a_tool_call_from_its_result() -> None:
    rng = random.Random(7)
    for trial in range(300):
        messages = _conversation(rng, rng.randint(1, 8))
        budget = rng.randint(10, 3000)
        kept = fit_to_budget(messages, budget)
        assert isinstance(kept[0], HumanMessage), "the current question is always kept, history starts at a question"
        calls = {c.id for m in kept if isinstance(m, AIMessage) for c in m.tool_calls}
        results = {m.tool_call_id for m in kept if isinstance(m, ToolMessage)}
        assert calls == results, f"trial {trial}: calls and results separated"
        # Kept messages are a suffix of the conversation, in order.
        assert messages[-len(kept) :] == kept
        last_question = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        current_turn = messages[last_question:]
        if len(kept) > len(current_turn):
            assert sum(estimate_tokens(m) for m in kept) <= budget, f"trial {trial}: over budget"


def test_truncation_drops_orphan_results_and_incomplete_calls() -> None:
    orphan = ToolMessage(tool_call_id="gone", name="t", content="r")
    dangling = AIMessage(tool_calls=[ToolCall(id="c9", name="t")])
    messages = [orphan, HumanMessage(content="q"), dangling, AIMessage(content="a")]
    kept = fit_to_budget(messages, 10_000)
    assert orphan not in kept and dangling not in kept
    assert [m.content for m in kept] == ["q", "a"]


async def test_a_late_append_of_an_archived_conversation_does_not_leak_into_the_new_one(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    old = await store.load("test:c1")
    await store.append("test:c1", [HumanMessage(content="old question")], session=old)
    await store.archive("test:c1")  # /new while the old turn is still finishing
    await store.append("test:c1", [AIMessage(content="old answer")], session=old)
    assert (await store.load("test:c1")).messages == []
    await store.append("test:c1", [HumanMessage(content="fresh")])
    assert [m.content for m in (await store.load("test:c1")).messages] == ["fresh"]


async def test_a_session_evicted_during_its_turn_keeps_the_next_turn_complete(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, cache_size=1)
    held = await store.load("test:a")  # the turn holds this object
    await store.append("test:a", [HumanMessage(content="q1")], session=held)
    await store.load("test:b")  # evicts test:a from the cache
    reloaded = await store.load("test:a")  # e.g. /status in the middle of the turn
    assert reloaded is not held
    await store.append("test:a", [AIMessage(content="a1")], session=held)
    assert [m.content for m in (await store.load("test:a")).messages] == ["q1", "a1"]
    assert [m.content for m in SessionStore(tmp_path).read_sync("test:a")] == ["q1", "a1"]


async def test_archive_reaches_a_session_object_that_was_evicted(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, cache_size=1)
    held = await store.load("test:a")
    await store.append("test:a", [HumanMessage(content="old")], session=held)
    await store.load("test:b")  # evicts the held session
    await store.archive("test:a")
    await store.append("test:a", [AIMessage(content="late")], session=held)
    assert (await store.load("test:a")).messages == []


# --- a write that fails (issue 13, item 9) ---------------------------------------------------------------


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TinyDisk | FileSizeLimit]:
    if request.param == "file-size-limit":
        yield FileSizeLimit(tmp_path)
        return
    with tiny_tmpfs(tmp_path / "tiny") as tiny:
        yield tiny


async def test_a_failed_append_is_cut_back_and_the_next_turn_is_kept(disk: TinyDisk | FileSizeLimit) -> None:
    """The disk fills up in the middle of a turn's write: the half-written line is cut back off the file, the
    caller gets a clear error, and the next turn, written once there is room again, is not lost on reload."""
    store = SessionStore(disk.root)
    await store.append("test:c1", [HumanMessage(content="one"), AIMessage(content="two")])
    path = store.path_for("test:c1")
    before = path.read_bytes()
    # Larger than any free space: the kernel takes part of it, then refuses the rest.
    with disk.full(path), pytest.raises(SessionWriteError, match="could not be saved") as failure:
        await store.append("test:c1", [HumanMessage(content="lost " * 3000), AIMessage(content="gone")])
    assert isinstance(failure.value.__cause__, OSError) and failure.value.__cause__.errno == disk.errno
    assert path.read_bytes() == before, "the partial line was cut back off"
    await store.append("test:c1", [HumanMessage(content="three"), AIMessage(content="four")])
    assert [m.content for m in (await store.load("test:c1")).messages] == ["one", "two", "three", "four"]
    assert [m.content for m in SessionStore(disk.root).read_sync("test:c1")] == ["one", "two", "three", "four"]


async def test_a_line_glued_onto_a_torn_one_is_recovered(tmp_path: Path) -> None:
    """Files written before failed writes were cut back can hold a later message glued onto a torn line, in
    the middle of the file: that message is read back, and so is everything after it."""
    store = SessionStore(tmp_path)
    torn = HumanMessage(content="torn " * 20).model_dump_json()
    glued = torn[: len(torn) // 2] + AIMessage(content="two").model_dump_json()
    lines = [
        HumanMessage(content="one").model_dump_json(),
        glued,
        "{not json",
        HumanMessage(content="three").model_dump_json(),
    ]
    path = store.path_for("x:1")
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    assert [m.content for m in (await store.load("x:1")).messages] == ["one", "two", "three"]


# --- keys that make awkward file names (issue 13, item 12) -----------------------------------------------


async def test_a_key_too_long_for_a_file_name_is_stored_listed_and_archived(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    keys = ["mqtt:" + "é" * 300, "mqtt:" + "é" * 299 + "è", "test:" + "x" * 5000, "test:short"]
    for key in keys:
        await store.append(key, [HumanMessage(content=key[-3:])])
    names = [store.path_for(k).name for k in keys]
    assert len(set(names)) == len(keys) and all(len(n.encode()) <= 255 for n in names)
    assert sorted(s.key for s in store.list_sessions()) == sorted(keys)
    reread = SessionStore(tmp_path)
    for key in keys:
        assert [m.content for m in reread.read_sync(key)] == [key[-3:]]
    archived = await store.archive(keys[0])
    assert archived is not None and archived.exists() and len(archived.name.encode()) <= 255
    await store.append(keys[0], [HumanMessage(content="fresh")])
    assert [m.content for m in SessionStore(tmp_path).read_sync(keys[0])] == ["fresh"]
    assert keys[0] in {s.key for s in store.list_sessions()}


KEYS = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=400)


@settings(
    max_examples=1000, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(KEYS)
def test_every_key_maps_to_one_safe_file_name(key: str) -> None:
    name = session_store._filename(key)
    assert name == session_store._filename(key)
    assert len(name.encode()) <= 255 - 30, "room left for the archive's timestamp"
    assert "/" not in name and "\0" not in name and name not in (".", "..") and name.isascii()
    stem = name[: -len(".jsonl")]
    if "+" not in stem:
        assert unquote(stem, errors="surrogatepass") == key


async def test_many_similar_keys_never_share_a_file_and_all_list_back(tmp_path: Path) -> None:
    """A seeded batch of keys built to collide if anything could: long shared prefixes that differ only at the
    end or by one character, percent signs, surrogates, the separator of shortened names."""
    rng = random.Random(4242)
    alphabet = ["a", "é", "%", "+", "%2B", ":", "/", "\ud800", "\udfff", "😀", "\x00", ".", " "]
    keys: set[str] = set()
    while len(keys) < 600:
        base = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        keys.add(base)
        keys.add("chan:" + "p" * rng.choice([50, 150, 194, 195, 196, 250]) + base)
    names = {session_store._filename(k) for k in keys}
    assert len(names) == len(keys)
    store = SessionStore(tmp_path)
    sample = sorted(keys)[::4]
    for key in sample:
        await store.append(key, [HumanMessage(content="hi")])
    assert sorted(s.key for s in store.list_sessions()) == sample
