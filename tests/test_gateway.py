import asyncio
import logging

import pytest

from operator_use.bus import MemoryBus
from operator_use.channels.base import ChannelError, FormattingRejected, RetryAfter
from operator_use.gateway.clock import FakeClock
from operator_use.gateway.gateway import Gateway
from operator_use.gateway.splitting import balanced, measure
from operator_use.messages import (
    Address,
    FilePart,
    OutgoingMessage,
    StreamBlockEnd,
    StreamDelta,
    StreamDone,
    StreamStart,
    TextPart,
    Typing,
)

from .support.channels import PickyChannel, RecordingChannel

pytestmark = pytest.mark.timeout(10)


def addr(channel: str, chat: str = "c1") -> Address:
    return Address(channel=channel, chat_id=chat)


async def make(*channels: RecordingChannel, clock: FakeClock | None = None, **kw):
    clock = clock or FakeClock()
    for ch in channels:
        ch.clock = clock
    bus = MemoryBus()
    gw = Gateway(bus, list(channels), clock=clock, **kw)
    await gw.start()
    return bus, gw, clock


async def test_hanging_channel_does_not_delay_another_channel():
    slow, fast = RecordingChannel("slow"), RecordingChannel("fast")
    slow.hang_all = True  # every call waits on an Event nobody sets
    bus, gw, _clock = await make(slow, fast)
    await bus.publish_outgoing(OutgoingMessage.of_text(addr("slow"), "are you there?"))
    await slow.wait_for(lambda: slow.in_flight == 1)
    await bus.publish_outgoing(OutgoingMessage.of_text(addr("fast"), "yes, here"))
    await asyncio.wait_for(fast.wait_for(lambda: len(fast.of("send")) == 1), timeout=5)
    assert fast.sent_texts == ["yes, here"]
    assert slow.sent_texts == [] and slow.in_flight == 1
    await gw.stop(grace=0)
    assert slow.in_flight == 0  # the hanging call was cancelled on stop


async def test_hanging_chat_does_not_block_another_chat_of_the_same_channel():
    ch = RecordingChannel("tg")
    ch.hang_chats = {"stuck"}
    bus, gw, _clock = await make(ch)
    await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg", "stuck"), "one"))
    await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg", "stuck"), "two"))  # queued behind it
    # a stream in another chat runs to completion meanwhile
    other = addr("tg", "free")
    await bus.publish_outgoing(StreamStart(address=other, stream_id="s"))
    await bus.publish_outgoing(StreamDelta(address=other, stream_id="s", delta="streamed"))
    await bus.publish_outgoing(StreamDone(address=other, stream_id="s"))
    await asyncio.wait_for(ch.wait_for(lambda: "streamed" in ch.sent_texts), timeout=5)
    assert [c.text for c in ch.of("send") if c.address.chat_id == "stuck"] == ["one"]
    # releasing the stuck chat delivers its queue in order
    ch.release.set()
    await asyncio.wait_for(ch.wait_for(lambda: "two" in ch.sent_texts), timeout=5)
    assert [c.text for c in ch.of("send") if c.address.chat_id == "stuck"] == ["one", "two"]
    await gw.stop(grace=1)


async def test_messages_of_one_chat_stay_in_order_through_retry_after():
    ch = RecordingChannel("tg")
    ch.fail("send", RetryAfter(2))
    bus, gw, clock = await make(ch)
    for i in range(4):
        await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg"), f"m{i}"))
    await clock.advance(0)
    assert ch.sent_texts == []  # waiting out the RetryAfter
    await clock.advance(2)
    assert ch.sent_texts == ["m0", "m1", "m2", "m3"]
    await gw.stop()


async def test_lanes_retire_when_idle():
    ch = RecordingChannel("tg")
    bus, gw, clock = await make(ch)
    for chat in ("a", "b", "c"):
        await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg", chat), "hi"))
    await clock.run_until_idle()
    assert len(ch.sent_texts) == 3
    assert gw._lanes == {}
    await gw.stop()


async def test_channel_failing_start_is_retried_down_then_up():
    ok, flaky = RecordingChannel("ok"), RecordingChannel("flaky", fail_starts=2)
    _bus, gw, clock = await make(ok, flaky, start_retry_base=1.0, start_retry_max=60.0)
    assert gw.status() == {"ok": "up", "flaky": "down"}
    await clock.advance(1.0)  # second attempt fails too; next in 2 s
    assert flaky.start_attempts == 2 and gw.status()["flaky"] == "down"
    await clock.advance(1.9)
    assert flaky.start_attempts == 2
    await clock.advance(0.1)
    assert flaky.start_attempts == 3 and gw.status()["flaky"] == "up"
    # a channel that is up reports its own status
    flaky.status = lambda: "reconnecting"  # type: ignore[method-assign]
    assert gw.status()["flaky"] == "reconnecting"
    await gw.stop()
    assert ok.stopped and flaky.stopped


async def test_start_backoff_is_capped():
    ch = RecordingChannel("x", fail_starts=100)
    _bus, gw, clock = await make(ch, start_retry_base=1.0, start_retry_max=4.0)
    await clock.advance(1 + 2 + 4 + 4 + 4)
    assert ch.start_attempts == 6
    await gw.stop()


async def test_typing_refreshes_until_stopped():
    ch = RecordingChannel("tg")
    bus, gw, clock = await make(ch)
    await bus.publish_outgoing(Typing(address=addr("tg")))
    await clock.advance(10)
    assert [c.at for c in ch.of("typing")] == [0.0, 4.0, 8.0]
    await bus.publish_outgoing(Typing(address=addr("tg"), active=False))
    await clock.advance(20)
    assert len(ch.of("typing")) == 3
    await gw.stop()


async def test_typing_stops_on_message_and_on_stream_done():
    ch = RecordingChannel("tg")
    bus, gw, clock = await make(ch)
    a = addr("tg")
    await bus.publish_outgoing(Typing(address=a))
    await clock.advance(5)
    await bus.publish_outgoing(OutgoingMessage.of_text(a, "answer"))
    await clock.advance(20)
    assert len(ch.of("typing")) == 2
    await bus.publish_outgoing(Typing(address=a))
    await bus.publish_outgoing(StreamStart(address=a, stream_id="s"))
    await bus.publish_outgoing(StreamDelta(address=a, stream_id="s", delta="x"))
    await clock.advance(5)
    await bus.publish_outgoing(StreamDone(address=a, stream_id="s"))
    await clock.advance(20)
    assert len(ch.of("typing")) == 4
    assert gw._typing == {}
    await gw.stop()


async def test_typing_errors_are_ignored():
    ch = RecordingChannel("tg")
    ch.fail("typing", ChannelError("nope"), RuntimeError("boom"))
    bus, gw, clock = await make(ch)
    await bus.publish_outgoing(Typing(address=addr("tg")))
    await clock.advance(9)
    assert len(ch.of("typing")) == 3
    await gw.stop()


async def test_long_message_is_split_and_first_chunk_replies():
    ch = RecordingChannel("tg", max_length=300, formatting="telegram_html")
    bus, gw, clock = await make(ch)
    code = "```py\n" + "\n".join(f"x{i} = {i}" for i in range(20)) + "\n```"
    text = "\n\n".join(["Intro " * 30, code, "Outro <done> " * 20])
    await bus.publish_outgoing(OutgoingMessage(address=addr("tg"), parts=[TextPart(text=text)], reply_to="u1"))
    await clock.run_until_idle()
    sends = ch.of("send")
    assert len(sends) >= 3
    assert sends[0].reply_to == "u1" and all(c.reply_to is None for c in sends[1:])
    assert any("<pre><code" in c.text for c in sends)
    assert all("&lt;done&gt;" in c.text for c in sends if "Outro" in c.text)
    await gw.stop()


async def test_non_text_parts_go_through_send_parts():
    ch = RecordingChannel("tg")
    bus, gw, clock = await make(ch)
    f = FilePart(name="a.txt", data=b"x")
    await bus.publish_outgoing(OutgoingMessage(address=addr("tg"), parts=[TextPart(text="here"), f], reply_to="u1"))
    await clock.run_until_idle()
    # A whole message is final as soon as it is sent.
    assert [c.kind for c in ch.calls] == ["send", "finalize", "send_parts"]
    assert ch.calls[0].reply_to == "u1" and ch.calls[2].reply_to is None
    assert ch.calls[1].message_id == ch.calls[0].message_id
    assert ch.calls[2].parts == [f]
    await gw.stop()


async def test_formatting_rejected_message_is_resent_plain():
    ch = RecordingChannel("tg", formatting="telegram_html")
    ch.fail("send", FormattingRejected("can't parse entities"))
    bus, gw, clock = await make(ch)
    await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg"), "**hi**"))
    await clock.run_until_idle()
    assert [c.text for c in ch.of("send")] == ["<b>hi</b>", "**hi**"]
    await gw.stop()


async def test_channel_error_is_logged_and_worker_survives(caplog):
    ch = RecordingChannel("tg")
    ch.fail("send", ChannelError("chat not found", permanent=True))
    bus, gw, clock = await make(ch)
    with caplog.at_level(logging.ERROR):
        await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg"), "lost"))
        await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg"), "kept"))
        await clock.run_until_idle()
    assert ch.sent_texts == ["kept"]
    assert "chat not found" in caplog.text
    await gw.stop()


async def test_unknown_channel_is_dropped(caplog):
    ch = RecordingChannel("tg")
    bus, gw, clock = await make(ch)
    with caplog.at_level(logging.WARNING):
        await bus.publish_outgoing(OutgoingMessage.of_text(addr("nowhere"), "x"))
        await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg"), "y"))
        await clock.run_until_idle()
    assert ch.sent_texts == ["y"]
    assert "nowhere" in caplog.text
    await gw.stop()


async def test_stream_through_gateway_with_tool_call():
    ch = RecordingChannel("tg", edit_interval=1.0)
    bus, gw, clock = await make(ch)
    a = addr("tg")
    await bus.publish_outgoing(StreamStart(address=a, stream_id="s", reply_to="u9"))
    for word in ["Checking", " now."]:
        await bus.publish_outgoing(StreamDelta(address=a, stream_id="s", delta=word))
        await clock.advance(0.3)
    await bus.publish_outgoing(StreamBlockEnd(address=a, stream_id="s"))
    await clock.advance(3)
    for word in ["All", " good."]:
        await bus.publish_outgoing(StreamDelta(address=a, stream_id="s", delta=word))
        await clock.advance(0.3)
    await bus.publish_outgoing(StreamDone(address=a, stream_id="s"))
    await bus.publish_outgoing(OutgoingMessage.of_text(a, "after"))
    await clock.advance(2)
    assert ch.sent_texts == ["Checking now.\n\nAll good.", "after"]
    assert ch.of("send")[0].reply_to == "u9"
    assert gw.editor.active() == 0
    await gw.stop()


async def test_message_after_stream_waits_for_final_flush():
    """A reply queued after StreamDone must not overtake the stream's final text."""
    ch = RecordingChannel("tg", edit_interval=1.0, max_length=50)
    bus, gw, clock = await make(ch)
    a = addr("tg")
    await bus.publish_outgoing(StreamStart(address=a, stream_id="s"))
    await bus.publish_outgoing(StreamDelta(address=a, stream_id="s", delta="word " * 30))
    await bus.publish_outgoing(StreamDone(address=a, stream_id="s"))
    await bus.publish_outgoing(OutgoingMessage.of_text(a, "next"))
    await clock.advance(10)
    assert ch.sent_texts[-1] == "next"
    assert all(balanced(t) and len(t) <= 50 for t in ch.sent_texts)
    await gw.stop()


async def test_stop_stops_channels_and_tasks():
    a, b = RecordingChannel("a"), RecordingChannel("b")
    bus, gw, clock = await make(a, b)
    await bus.publish_outgoing(Typing(address=addr("a")))
    await clock.run_until_idle()
    await gw.stop()
    assert a.stopped and b.stopped
    assert gw.status() == {"a": "down", "b": "down"}
    assert len(gw._typing_tasks) == 0 and len(gw._lane_tasks) == 0 and len(gw._tasks) == 0


# --- refusals of whole messages, send rate margins ---


def _emoji_paragraphs(n: int) -> str:
    return "\n\n".join(" ".join(f"😀{p}w{i}🚀" for i in range(50)) for p in range(n))


async def test_whole_message_too_long_for_the_platform_is_cut_smaller():
    ch = PickyChannel("tg", platform_limit=300, max_length=300)  # declares characters, counted in UTF-16
    bus, gw, clock = await make(ch)
    text = _emoji_paragraphs(6)
    await bus.publish_outgoing(OutgoingMessage.of_text(addr("tg"), text, reply_to="u1"))
    await clock.run_until_idle()
    assert any(not c.ok for c in ch.of("send"))  # "too long" happened...
    assert " ".join(ch.sent_texts).split() == text.split()  # ...and every word arrived, in order
    assert all(measure(t, "utf16") <= 300 for t in ch.sent_texts)
    await gw.stop()


async def test_whole_message_refused_chunk_is_skipped_and_told():
    ch = PickyChannel(
        "tw",
        platform_limit=100,
        max_length=100,
        formatting="plain",
        refuse=lambda t: "forbidden" in t,
        reason="AutoMod held it",
    )
    bus, gw, clock = await make(ch)
    paras = ["First part is fine.", "Second has a forbidden word " + "x" * 60, "Third part is fine."]
    await bus.publish_outgoing(OutgoingMessage.of_text(addr("tw"), "\n\n".join(paras)))
    await clock.run_until_idle()
    assert ch.sent_texts == [
        paras[0],
        paras[2],
        f"({len(paras[1])} characters could not be delivered: AutoMod held it)",
    ]
    await gw.stop()


async def test_twitch_sends_keep_a_margin_under_20_per_30_seconds():
    from operator_use.channels.twitch import TwitchConfig
    from operator_use.channels.twitch.channel import TwitchChannel

    twitch = TwitchChannel(TwitchConfig(enabled=True, client_id="id", access_token="token"))
    ch = RecordingChannel("tw", formatting="plain")
    ch.capabilities = twitch.capabilities  # what the Twitch channel declares, on a recording channel
    bus, gw, clock = await make(ch)
    for i in range(45):
        await bus.publish_outgoing(OutgoingMessage.of_text(addr("tw"), f"message {i}"))
    await clock.drive(ch.wait_for(lambda: len(ch.of("send")) == 45))
    times = [c.at for c in ch.of("send")]
    # Any 21 sends span more than Twitch's 30 s window by at least half a second of network jitter.
    assert min(b - a for a, b in zip(times, times[20:], strict=False)) >= 30.0 + 0.5
    await gw.stop()


async def test_twitch_answering_in_two_chats_keeps_20_per_30_seconds_for_the_account():
    from operator_use.channels.twitch import TwitchConfig
    from operator_use.channels.twitch.channel import TwitchChannel

    twitch = TwitchChannel(TwitchConfig(enabled=True, client_id="id", access_token="token"))
    ch = RecordingChannel("tw", formatting="plain")
    ch.capabilities = twitch.capabilities
    bus, gw, clock = await make(ch)
    for i in range(30):
        for chat in ("c1", "c2"):
            await bus.publish_outgoing(OutgoingMessage.of_text(addr("tw", chat), f"{chat} message {i}"))
    await clock.drive(ch.wait_for(lambda: len(ch.of("send")) == 60))
    sends = ch.of("send")
    times = [c.at for c in sends]
    # Twitch counts the account's messages wherever they go: any 21 sends, in either chat, span more than 30 s
    # by the margin (per chat alone, 40 would go in the first 30 s).
    assert min(b - a for a, b in zip(times, times[20:], strict=False)) >= 30.0 + 0.5
    assert times[-1] == 62.0  # no slot wasted: 60 messages in three windows
    by_chat = {chat: [c for c in sends if c.address.chat_id == chat] for chat in ("c1", "c2")}
    for chat, mine in by_chat.items():
        assert [c.text for c in mine] == [f"{chat} message {i}" for i in range(30)]
    # First come, first served across chats: c2 goes as soon as the window frees, not after all of c1.
    assert by_chat["c2"][0].at == by_chat["c1"][-1].at == 31.0
    await gw.stop()
