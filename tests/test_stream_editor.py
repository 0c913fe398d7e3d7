import itertools
import re

import pytest

from operator_use.channels.base import ChannelError, FormattingRejected, NotModified, RetryAfter
from operator_use.gateway.clock import FakeClock
from operator_use.gateway.splitting import balanced, measure
from operator_use.gateway.stream_editor import StreamEditor
from operator_use.messages import Address, StreamBlockEnd, StreamDelta, StreamDone, StreamStart

from .support.channels import PickyChannel, RecordingChannel

pytestmark = pytest.mark.timeout(30)

ADDR = Address(channel="rec", chat_id="chat1")
SID = "s1"


def squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def setup(**caps):
    clock = FakeClock()
    ch = RecordingChannel(clock=clock, **caps)
    return clock, ch, StreamEditor(clock)


async def start(ed, ch, reply_to=None):
    await ed.handle(ch, StreamStart(address=ADDR, stream_id=SID, reply_to=reply_to))


async def delta(ed, ch, text):
    await ed.handle(ch, StreamDelta(address=ADDR, stream_id=SID, delta=text))


async def done(clock, ed, ch, interrupted=False):
    await clock.drive(ed.handle(ch, StreamDone(address=ADDR, stream_id=SID, interrupted=interrupted)))


async def stream(clock, ed, ch, deltas, every=0.1):
    for d in deltas:
        await delta(ed, ch, d)
        await clock.advance(every)


def token_deltas(n: int) -> list[str]:
    return ["Hello"] + [f" word{i}" for i in range(n - 1)]


async def test_30s_stream_at_1s_interval_makes_at_most_31_calls():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch, reply_to="m0")
    deltas = token_deltas(300)  # one every 100 ms: 30 s of virtual time
    await stream(clock, ed, ch, deltas)
    await done(clock, ed, ch)

    calls = ch.text_calls
    full = "".join(deltas)
    assert len(calls) <= 31
    assert calls[-1].text == full
    assert ch.sent_texts == [full]
    assert [c.kind for c in calls].count("send") == 1
    assert calls[0].reply_to == "m0"
    # at most one call per interval
    assert all(b.at - a.at >= 1.0 - 1e-9 for a, b in itertools.pairwise(calls))
    # the final edit lands within one interval of the last token
    assert calls[-1].at - 29.9 <= 1.0 + 1e-9
    assert ed.stats.calls == len(calls)
    assert ed.active() == 0


async def test_throttle_keeps_the_tail():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch)
    await delta(ed, ch, "one")
    await clock.advance(0.1)  # first send
    await delta(ed, ch, " two")
    await clock.advance(0.2)
    await delta(ed, ch, " three")  # inside the interval: no call now...
    assert len(ch.text_calls) == 1
    await clock.advance(1.0)  # ...but the flusher sends the latest text when the interval ends
    assert ch.text_calls[-1].text == "one two three"
    assert len(ch.text_calls) == 2


async def test_retry_after_in_the_middle_loses_nothing():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch)
    deltas = token_deltas(200)
    await stream(clock, ed, ch, deltas[:100])
    ch.fail("edit", RetryAfter(3))
    await stream(clock, ed, ch, deltas[100:])
    await done(clock, ed, ch)

    full = "".join(deltas)
    calls = ch.text_calls
    failed = [c for c in calls if not c.ok]
    assert len(failed) == 1 and isinstance(failed[0].error, RetryAfter)
    after = [c for c in calls if c.at > failed[0].at]
    assert after and after[0].at >= failed[0].at + 3 - 1e-9  # waited, nothing in between
    assert ch.sent_texts == [full]
    assert calls[-1].text == full
    assert ed.stats.retry_after == 1


async def test_retry_after_on_first_send():
    clock, ch, ed = setup(edit_interval=1.0)
    ch.fail("send", RetryAfter(2.5))
    await start(ed, ch)
    await stream(clock, ed, ch, ["a", " b", " c"])
    await done(clock, ed, ch)
    assert ch.sent_texts == ["a b c"]
    ok_sends = [c for c in ch.of("send") if c.ok]
    assert len(ok_sends) == 1 and ok_sends[0].at >= 2.5


def _answer_with_code(total: int = 10_000) -> str:
    paras, i = [], 0
    while sum(len(p) + 2 for p in paras) < total // 2:
        paras.append(" ".join(f"alpha{i}-{j}" for j in range(30)) + ".")
        i += 1
    code = "```python\n" + "\n".join(f"def f{k}(x):\n    return x * {k}  # <&>" for k in range(25)) + "\n```"
    rest = []
    while sum(len(p) + 2 for p in [*paras, code, *rest]) < total:
        rest.append(" ".join(f"omega{i}-{j}" for j in range(30)) + ".")
        i += 1
    return "\n\n".join([*paras, code, *rest])


async def test_10000_chars_with_code_block_splits_at_4096_without_breaking_it():
    clock, ch, ed = setup(edit_interval=1.0, max_length=4096)
    text = _answer_with_code(10_000)
    assert len(text) >= 10_000
    await start(ed, ch)
    await stream(clock, ed, ch, [text[i : i + 16] for i in range(0, len(text), 16)], every=0.02)
    await done(clock, ed, ch)

    messages = ch.sent_texts
    assert len(messages) >= 3
    assert all(len(m) <= 4096 for m in messages)
    assert all(balanced(m) for m in messages)
    assert squash("".join(messages)) == squash(text)
    # one send per message, edits only on messages already posted
    assert len(ch.of("send")) == len(messages)
    assert all(b.at - a.at >= 1.0 - 1e-9 for a, b in zip(ch.text_calls, ch.text_calls[1:], strict=False))


async def test_oversized_code_block_while_streaming():
    clock, ch, ed = setup(edit_interval=0.5, max_length=800)
    text = "Script:\n\n```sh\n" + "\n".join(f"echo line {i}" for i in range(200)) + "\n```\n\nThat is all."
    await start(ed, ch)
    await stream(clock, ed, ch, [text[i : i + 7] for i in range(0, len(text), 7)], every=0.02)
    await done(clock, ed, ch)
    messages = ch.sent_texts
    assert len(messages) > 3
    assert all(len(m) <= 800 and balanced(m) for m in messages)
    lines = [ln for m in messages for ln in m.split("\n") if not ln.startswith("```")]
    assert squash("".join(lines)) == squash(text.replace("```sh", "").replace("```", ""))


async def test_final_answer_is_never_sent_twice():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch)
    await stream(clock, ed, ch, token_deltas(25))
    await done(clock, ed, ch)
    full = "".join(token_deltas(25))
    assert len(ch.of("send")) == 1
    assert ch.text_calls[-1].kind == "edit" and ch.text_calls[-1].text == full
    assert [c.text for c in ch.text_calls].count(full) == 1


async def test_done_before_first_flush_sends_once():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch)
    await delta(ed, ch, "Quick")
    await delta(ed, ch, " answer.")
    await done(clock, ed, ch)
    assert [(c.kind, c.text) for c in ch.text_calls] == [("send", "Quick answer.")]


async def test_text_before_a_tool_call_survives():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch)
    await delta(ed, ch, "Let me check the weather.")
    await ed.handle(ch, StreamBlockEnd(address=ADDR, stream_id=SID))
    await clock.advance(5)  # the tool runs
    assert ch.sent_texts == ["Let me check the weather."]
    await delta(ed, ch, "It is sunny")
    await delta(ed, ch, " today.")
    await done(clock, ed, ch)
    assert ch.sent_texts == ["Let me check the weather.\n\nIt is sunny today."]
    assert len(ch.of("send")) == 1
    assert all(c.text.startswith("Let me check the weather.") for c in ch.text_calls)


async def test_block_end_flushes_below_min_chars():
    clock = FakeClock()
    ch = RecordingChannel(clock=clock)
    ed = StreamEditor(clock, min_chars=20)
    await start(ed, ch)
    await delta(ed, ch, "Hmm.")
    await clock.advance(2)
    assert ch.text_calls == []  # below the threshold: nothing yet
    await ed.handle(ch, StreamBlockEnd(address=ADDR, stream_id=SID))
    await clock.advance(0)
    assert ch.sent_texts == ["Hmm."]
    await delta(ed, ch, "Found it.")
    await done(clock, ed, ch)
    assert ch.sent_texts == ["Hmm.\n\nFound it."]


async def test_min_chars_threshold():
    clock = FakeClock()
    ch = RecordingChannel(clock=clock)
    ed = StreamEditor(clock, min_chars=10)
    await start(ed, ch)
    await delta(ed, ch, "   ")
    await delta(ed, ch, "Hi")
    await clock.advance(3)
    assert ch.text_calls == []
    await delta(ed, ch, " there, friend")
    await clock.advance(0.1)
    assert ch.sent_texts == ["   Hi there, friend"]


async def test_not_modified_counts_as_success():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch)
    await stream(clock, ed, ch, ["a"] * 5)
    ch.fail("edit", NotModified("message is not modified"))
    await stream(clock, ed, ch, ["b"] * 15)
    await done(clock, ed, ch)
    assert ed.stats.not_modified == 1
    assert ed.stats.errors == 0
    assert ch.sent_texts == ["a" * 5 + "b" * 15]
    assert len(ch.of("send")) == 1


async def test_formatting_rejected_resends_plain():
    clock, ch, ed = setup(edit_interval=1.0, formatting="telegram_html")
    ch.fail("send", FormattingRejected("can't parse entities"))
    await start(ed, ch)
    await delta(ed, ch, "**bold** text")
    await done(clock, ed, ch)
    sends = ch.of("send")
    assert sends[0].text == "<b>bold</b> text" and not sends[0].ok
    assert sends[1].text == "**bold** text" and sends[1].ok
    assert ch.sent_texts == ["**bold** text"]


async def test_edits_are_formatted():
    clock, ch, ed = setup(edit_interval=1.0, formatting="telegram_html")
    await start(ed, ch)
    await stream(clock, ed, ch, ["Use ", "`a<b`", " and **x", "**"], every=0.6)
    await done(clock, ed, ch)
    assert ch.sent_texts == ["Use <code>a&lt;b</code> and <b>x</b>"]


async def test_whitespace_only_change_makes_no_call():
    clock, ch, ed = setup(edit_interval=1.0, formatting="telegram_html")
    await start(ed, ch)
    await delta(ed, ch, "Done.")
    await clock.advance(0.1)
    await delta(ed, ch, "\n\n")
    await done(clock, ed, ch)
    assert len(ch.text_calls) == 1


async def test_permanent_error_abandons_stream_without_hanging():
    clock, ch, ed = setup(edit_interval=1.0)
    ch.fail("send", ChannelError("bot was kicked", permanent=True))
    await start(ed, ch)
    await delta(ed, ch, "hello")
    await clock.advance(0.1)
    await delta(ed, ch, " more")  # late events for an abandoned stream are ignored
    await done(clock, ed, ch)
    assert len(ch.text_calls) == 1 and ed.stats.errors == 1
    assert ed.active() == 0


async def test_transient_errors_are_retried():
    clock, ch, ed = setup(edit_interval=1.0)
    ch.fail("send", ChannelError("502"))
    await start(ed, ch)
    await delta(ed, ch, "hello")
    await done(clock, ed, ch)
    assert ch.sent_texts == ["hello"]
    assert ed.stats.errors == 1


async def test_interrupted_stream_flushes_what_it_has():
    clock, ch, ed = setup(edit_interval=1.0)
    await start(ed, ch)
    await stream(clock, ed, ch, ["partial", " answer"], every=0.3)
    await done(clock, ed, ch, interrupted=True)
    assert ch.sent_texts == ["partial answer"]


async def test_empty_stream_sends_nothing():
    clock, ch, ed = setup()
    await start(ed, ch)
    await delta(ed, ch, "  \n")
    await done(clock, ed, ch)
    assert ch.calls == []


# --- channels that cannot edit ---


def _paragraphs() -> list[str]:
    words = lambda n, tag: " ".join(f"{tag}{i}" for i in range(n))  # noqa: E731
    return [words(20, "a"), words(60, "b"), words(12, "c"), words(150, "d"), words(40, "e"), words(8, "f")]


async def test_non_editing_channel_gets_paragraph_blocks():
    clock, ch, ed = setup(can_edit=False, max_length=500, edit_interval=1.5)
    paras = _paragraphs()
    text = "\n\n".join(paras)
    await start(ed, ch, reply_to="q1")
    await stream(clock, ed, ch, [text[i : i + 8] for i in range(0, len(text), 8)], every=0.05)
    await done(clock, ed, ch)

    sends = ch.of("send")
    assert ch.of("edit") == []
    assert all(len(c.text) <= 500 for c in sends)
    assert all(b.at - a.at >= 1.5 - 1e-9 for a, b in itertools.pairwise(sends))
    assert squash("".join(c.text for c in sends)) == squash(text)
    # paragraphs that fit are never cut across messages
    for p in paras:
        if len(p) <= 500:
            assert any(p in c.text for c in sends), p[:20]
    assert sends[0].reply_to == "q1" and all(c.reply_to is None for c in sends[1:])


async def test_non_editing_channel_waits_for_paragraph_end():
    clock, ch, ed = setup(can_edit=False, max_length=500, edit_interval=1.0)
    await start(ed, ch)
    await delta(ed, ch, "First paragraph, still going")
    await clock.advance(3)
    assert ch.calls == []
    await delta(ed, ch, ".\n\nSecond")
    await clock.advance(0.1)
    assert [c.text for c in ch.of("send")] == ["First paragraph, still going."]
    await delta(ed, ch, " one.")
    await ed.handle(ch, StreamBlockEnd(address=ADDR, stream_id=SID))
    await clock.advance(1)
    assert [c.text for c in ch.of("send")][-1] == "Second one."
    await delta(ed, ch, "After the tool.")
    await done(clock, ed, ch)
    assert [c.text for c in ch.of("send")] == ["First paragraph, still going.", "Second one.", "After the tool."]


async def test_non_editing_block_end_sends_all_text_before_the_tool_even_if_long():
    clock, ch, ed = setup(can_edit=False, max_length=100, edit_interval=1.0)
    await start(ed, ch)
    text = " ".join(f"w{i}" for i in range(80))  # one paragraph, ~300 chars: needs several messages
    await delta(ed, ch, text)
    await ed.handle(ch, StreamBlockEnd(address=ADDR, stream_id=SID))
    await clock.advance(10)  # the tool runs for a long time: everything before it must be out
    assert squash("".join(c.text for c in ch.of("send"))) == squash(text)
    assert all(len(c.text) <= 100 for c in ch.of("send"))
    await done(clock, ed, ch)


# --- the fake clock itself ---


async def test_fake_clock_wakes_sleepers_in_order_at_their_deadline():
    import asyncio

    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in [("c", 3), ("a", 1), ("b", 2), ("x", 9)]]
    await clock.advance(2.5)
    assert woke == [("a", 1.0), ("b", 2.0)] and clock.now() == 2.5
    tasks[3].cancel()  # a cancelled sleeper is skipped
    await clock.advance(10)
    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert clock.sleepers == 0


async def test_fake_clock_drive_reports_a_stuck_awaitable():
    import asyncio

    clock = FakeClock()
    with pytest.raises(TimeoutError):
        await clock.drive(asyncio.Event().wait())
    assert await clock.drive(clock.sleep(5)) is None and clock.now() == 5


# --- finalize ---


async def test_each_message_is_finalized_once_after_its_last_edit():
    clock, ch, ed = setup(edit_interval=0.5, max_length=300)
    text = "\n\n".join(" ".join(f"p{p}w{i}" for i in range(25)) for p in range(6))  # ~3 messages
    await start(ed, ch)
    await stream(clock, ed, ch, [text[i : i + 10] for i in range(0, len(text), 10)], every=0.05)
    await done(clock, ed, ch)
    ids = list(ch.messages)
    assert len(ids) >= 3 and ch.finalized == ids
    for mid in ids:
        fin = next(i for i, c in enumerate(ch.calls) if c.kind == "finalize" and c.message_id == mid)
        assert not any(c.kind == "edit" and c.message_id == mid for c in ch.calls[fin:])
    assert ed.stats.finalized == len(ids)


async def test_finalize_on_interrupted_stream_and_errors_ignored():
    clock, ch, ed = setup()
    ch.fail("finalize", ChannelError("nope"))
    await start(ed, ch)
    await delta(ed, ch, "partial")
    await done(clock, ed, ch, interrupted=True)
    assert ch.sent_texts == ["partial"] and len(ch.of("finalize")) == 1
    assert ed.active() == 0


async def test_non_editing_blocks_are_finalized_as_sent():
    clock, ch, ed = setup(can_edit=False, max_length=500)
    await start(ed, ch)
    await delta(ed, ch, "one\n\ntwo")
    await done(clock, ed, ch)
    assert ch.finalized == list(ch.messages) and len(ch.finalized) == 2


async def test_nothing_to_finalize_for_an_empty_stream():
    clock, ch, ed = setup()
    await start(ed, ch)
    await done(clock, ed, ch)
    assert ch.calls == []


# --- lengths as the platform counts them, refusals ---

EMOJI = ["😀", "🚀", "👍🏽", "🎉", "🔥", "👨‍👩‍👧"]  # outside the BMP: 2 UTF-16 units each (more with modifiers)


def emoji_text(total: int) -> str:
    """Paragraphs of words with two emoji each: about 1.4 UTF-16 units per character."""
    words: list[str] = []
    i = 0
    while sum(len(w) + 1 for w in words) < total:
        words.append(f"{EMOJI[i % len(EMOJI)]}w{i}{EMOJI[(i + 3) % len(EMOJI)]}" + ("\n\n" if i % 40 == 39 else ""))
        i += 1
    return " ".join(words).replace("\n\n ", "\n\n")


def picky(**kw):
    clock = FakeClock()
    ch = PickyChannel(clock=clock, **kw)
    return clock, ch, StreamEditor(clock)


async def _stream_all(clock, ed, ch, text, step=40):
    await start(ed, ch, reply_to="q")
    await stream(clock, ed, ch, [text[i : i + step] for i in range(0, len(text), step)], every=0.05)
    await done(clock, ed, ch)


async def test_length_in_the_platforms_unit_never_overflows():
    clock, ch, ed = picky(platform_limit=300, max_length=300, edit_interval=0.5)
    ch.capabilities = ch.capabilities.model_copy(update={"length_unit": "utf16"})
    text = emoji_text(2000)
    assert measure(text, "utf16") > 1.3 * len(text)
    await _stream_all(clock, ed, ch, text)
    assert squash("".join(ch.sent_texts)) == squash(text)
    assert all(measure(t, "utf16") <= 300 for t in ch.sent_texts)
    assert all(c.ok for c in ch.text_calls) and ed.stats.too_long == 0


async def test_too_long_for_the_platform_cuts_smaller_and_loses_nothing():
    # The channel declares characters; the platform counts UTF-16 units and says "too long".
    clock, ch, ed = picky(platform_limit=300, max_length=300, edit_interval=0.5)
    text = emoji_text(2000)
    await _stream_all(clock, ed, ch, text)
    assert ed.stats.too_long >= 1 and any(not c.ok for c in ch.text_calls)
    assert squash("".join(ch.sent_texts)) == squash(text)  # every character arrived, in order
    assert all(measure(t, "utf16") <= 300 for t in ch.sent_texts)
    assert ed.stats.undelivered_chars == 0 and not any("could not be delivered" in t for t in ch.sent_texts)
    assert ed.active() == 0


async def test_a_refused_block_is_skipped_the_rest_goes_on_and_the_user_is_told():
    clock, ch, ed = picky(
        platform_limit=100,
        can_edit=False,
        max_length=100,
        edit_interval=1.0,
        refuse=lambda t: "forbidden" in t,
        reason="AutoMod held it",
    )
    paras = (
        [f"Paragraph {i} is fine." for i in range(3)]
        + ["This one has a forbidden word."]
        + [f"Paragraph {i} is fine too." for i in range(4, 7)]
    )
    await start(ed, ch)
    await stream(clock, ed, ch, [p + "\n\n" for p in paras], every=2.0)  # one block per paragraph
    await done(clock, ed, ch)
    sends = ch.of("send")
    delivered = [c.text for c in sends if c.ok]
    assert delivered[:-1] == [p for p in paras if "forbidden" not in p]
    assert delivered[-1] == f"({len(paras[3])} characters could not be delivered: AutoMod held it)"
    assert [c.text for c in sends if not c.ok] == [paras[3]]
    assert ed.stats.refused == 1 and ed.stats.undelivered_chars == len(paras[3]) and ed.active() == 0


async def test_a_refused_message_offered_reworded_is_sent_reworded():
    clock, ch, ed = picky(
        platform_limit=100,
        can_edit=False,
        max_length=100,
        edit_interval=1.0,
        refuse=lambda t: t == "Same again.",
        reword=lambda t: t + " (repeat)",
    )
    await start(ed, ch)
    await stream(clock, ed, ch, ["First.\n\n", "Same again.\n\n", "Last."], every=2.0)
    await done(clock, ed, ch)
    assert [c.text for c in ch.of("send")] == ["First.", "Same again.", "Same again. (repeat)", "Last."]
    assert ch.sent_texts == ["First.", "Same again. (repeat)", "Last."]  # no notice: nothing was lost


async def test_a_refused_edit_keeps_the_message_and_goes_on_in_a_new_one():
    clock, ch, ed = picky(platform_limit=4096, edit_interval=1.0, refuse=lambda t: "forbidden" in t)
    await start(ed, ch)
    await delta(ed, ch, "Good start.")
    await clock.advance(2)
    await delta(ed, ch, " Then forbidden words.")
    await clock.advance(3)  # the edit is refused; the new message with the rest too
    await delta(ed, ch, "\n\nThe end.")
    await done(clock, ed, ch)
    skipped = len(" Then forbidden words.")
    assert ch.sent_texts == [
        "Good start.",
        "\n\nThe end.",
        f"({skipped} characters could not be delivered: not allowed here)",
    ]
    assert ed.stats.undelivered_chars == skipped and ch.finalized == list(ch.messages)
