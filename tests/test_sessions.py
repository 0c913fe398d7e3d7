from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from operator_use.messages import AIMessage, HumanMessage, ToolCall, ToolMessage
from operator_use.session.store import SessionStore
from operator_use.session.truncate import estimate_tokens, fit_to_budget


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
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, text=True)
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
    path.write_text(HumanMessage(content="a").model_dump_json() + "\n{not json\n" + AIMessage(content="b").model_dump_json() + "\n")
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
    for t in range(turns):
        out.append(HumanMessage(content="q" * rng.randint(1, 400)))
        for _ in range(rng.randint(0, 3)):
            calls = [ToolCall(id=f"c{(n := n + 1)}", name="t", arguments={"x": "y" * rng.randint(0, 300)})
                     for _ in range(rng.randint(1, 3))]
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
        assert messages[-len(kept):] == kept
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
