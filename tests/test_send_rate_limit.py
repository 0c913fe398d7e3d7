"""Send rate limits (`Channel.rate_limits`: per chat, per account, Twitch whispers) and reply_each_chunk, on virtual
time."""

from __future__ import annotations

import asyncio
import re

import pytest

from operator_use.bus import MemoryBus
from operator_use.gateway.clock import FakeClock
from operator_use.gateway.gateway import Gateway
from operator_use.gateway.ratelimit import SendLimiter
from operator_use.gateway.stream_editor import StreamEditor
from operator_use.messages import (
    Address,
    OutgoingMessage,
    StreamDelta,
    StreamDone,
    StreamStart,
)

from .support.channels import RecordingChannel

pytestmark = pytest.mark.timeout(30)

TWITCH = {"can_edit": False, "max_length": 500, "edit_interval": 0.0, "formatting": "plain"}


def limited(
    name: str = "tw",
    rate: tuple[int, float] = (20, 30.0),
    *,
    clock: FakeClock | None = None,
    each_chunk: bool = False,
    **caps,
) -> RecordingChannel:
    ch = RecordingChannel(name, clock=clock, **{**TWITCH, **caps})
    ch.capabilities = ch.capabilities.model_copy(update={"rate_limit": rate, "reply_each_chunk": each_chunk})
    return ch


def within_rate(times: list[float], count: int, seconds: float) -> bool:
    """No `seconds`-long window holds more than `count` of these (sorted) times."""
    return all(b - a >= seconds - 1e-9 for a, b in zip(times, times[count:], strict=False))


def sentences(total: int) -> str:
    out, i = [], 0
    while sum(len(s) + 1 for s in out) < total:
        i += 1
        out.append(f"Sentence number {i} says something about topic {i * 7} in plain words.")
    return " ".join(out)


async def test_limiter_is_a_fifo_sliding_window():
    clock = FakeClock()
    ch = limited(clock=clock)
    limiter = SendLimiter(clock)
    address = Address(channel="tw", chat_id="c1")
    got: list[tuple[int, float]] = []

    async def one(i: int) -> None:
        await limiter.acquire(ch, address)
        got.append((i, clock.now()))

    await clock.drive(asyncio.gather(*(one(i) for i in range(45))))
    assert [i for i, _ in got] == list(range(45))  # first come, first served
    times = [t for _, t in got]
    assert times[:20] == [0.0] * 20 and times[20:40] == [30.0] * 20 and times[40:] == [60.0] * 5
    # Another chat of the same channel has its own window; a thread does not.
    thread = Address(channel="tw", chat_id="c1", thread_id="u9")
    for _ in range(15):
        await limiter.acquire(ch, thread)
    assert limiter.ready_at(ch, address) == limiter.ready_at(ch, thread) == 90.0
    assert limiter.ready_at(ch, Address(channel="tw", chat_id="c2")) == -float("inf")


async def test_whole_messages_queue_instead_of_dropping_and_other_chats_keep_going():
    clock = FakeClock()
    ch = limited(clock=clock)
    bus = MemoryBus()
    gw = Gateway(bus, [ch], clock=clock)
    await gw.start()
    for i in range(50):
        await bus.publish_outgoing(OutgoingMessage.of_text(Address(channel="tw", chat_id="c1"), f"message {i}"))
    await clock.run_until_idle()
    assert len(ch.of("send")) == 20
    await bus.publish_outgoing(OutgoingMessage.of_text(Address(channel="tw", chat_id="c2"), "elsewhere"))
    await clock.run_until_idle()
    assert ch.of("send")[-1].text == "elsewhere"  # c2 is not held up by c1's queue
    await clock.drive(ch.wait_for(lambda: len(ch.of("send")) == 51))
    c1 = [c for c in ch.of("send") if c.address.chat_id == "c1"]
    assert [c.text for c in c1] == [f"message {i}" for i in range(50)]
    assert within_rate([c.at for c in c1], 20, 30.0)
    assert c1[-1].at == 60.0
    await gw.stop()


async def test_streams_of_different_threads_share_the_chat_budget():
    clock = FakeClock()
    ch = limited(rate=(3, 10.0), clock=clock)
    ed = StreamEditor(clock)
    for user in ("u1", "u2"):
        address = Address(channel="tw", chat_id="c1", thread_id=user)
        await ed.handle(ch, StreamStart(address=address, stream_id=user))
        await ed.handle(
            ch,
            StreamDelta(address=address, stream_id=user, delta="\n\n".join(f"{user} paragraph {i}." for i in range(4))),
        )
    await clock.drive(
        asyncio.gather(
            *(
                ed.handle(ch, StreamDone(address=Address(channel="tw", chat_id="c1", thread_id=u), stream_id=u))
                for u in ("u1", "u2")
            )
        )
    )
    sends = ch.of("send")
    assert within_rate([c.at for c in sends], 3, 10.0)
    for user in ("u1", "u2"):
        mine = " ".join(c.text for c in sends if c.address.thread_id == user)
        assert re.sub(r"\s+", " ", mine) == " ".join(f"{user} paragraph {i}." for i in range(4))


async def test_long_answer_is_cut_at_sentences_within_the_rate_and_every_chunk_replies():
    clock = FakeClock()
    ch = limited(rate=(2, 10.0), clock=clock, each_chunk=True)
    ed = StreamEditor(clock)
    address = Address(channel="tw", chat_id="c1")
    text = sentences(2000)
    await ed.handle(ch, StreamStart(address=address, stream_id="s", reply_to="q1"))
    for i in range(0, len(text), 7):
        await ed.handle(ch, StreamDelta(address=address, stream_id="s", delta=text[i : i + 7]))
        await clock.advance(0.05)
    await clock.drive(ed.handle(ch, StreamDone(address=address, stream_id="s")))
    sends = ch.of("send")
    assert len(sends) >= 4
    assert all(len(c.text) <= 500 and c.text.endswith(".") for c in sends)
    assert " ".join(c.text for c in sends) == text
    assert within_rate([c.at for c in sends], 2, 10.0)
    assert all(c.reply_to == "q1" for c in sends)


async def test_whole_message_chunks_all_reply_when_the_channel_asks():
    clock = FakeClock()
    ch = limited(clock=clock, each_chunk=True)
    bus = MemoryBus()
    gw = Gateway(bus, [ch], clock=clock)
    await gw.start()
    await bus.publish_outgoing(OutgoingMessage.of_text(Address(channel="tw", chat_id="c1"), sentences(1200), "q7"))
    await clock.drive(ch.wait_for(lambda: len(ch.of("send")) >= 3))
    assert all(c.reply_to == "q7" for c in ch.of("send"))
    await gw.stop()


@pytest.mark.parametrize("margin", [0.0, 1.0])
async def test_twitch_whispers_keep_their_own_limits_for_the_account(margin: float):
    from operator_use.channels.twitch import TwitchConfig
    from operator_use.channels.twitch.channel import TwitchChannel

    clock = FakeClock()
    twitch = TwitchChannel(TwitchConfig(enabled=True, client_id="id", access_token="token", rate_margin=margin))
    limiter = SendLimiter(clock)
    times: list[float] = []

    async def whisper(i: int) -> None:
        await limiter.acquire(twitch, Address(channel="twitch", chat_id=f"@{i % 7}"))  # to seven people
        times.append(clock.now())

    await clock.drive(asyncio.gather(*(whisper(i) for i in range(150))))
    # Helix Send Whisper: at most 3 per second and 100 per minute, whoever they go to (plus the margin).
    assert within_rate(times, 3, 1.0 + margin) and within_rate(times, 100, 60.0 + margin)
    assert not within_rate(times, 3, 1.0 + margin + 0.5)  # and no slower than that
    # Whispers count neither in a chat's window nor in the account's chat window, and chat messages wait
    # for no whisper.
    chat = Address(channel="twitch", chat_id="123")
    assert limiter.ready_at(twitch, chat) == -float("inf")
    now = clock.now()
    await limiter.acquire(twitch, chat)
    assert clock.now() == now
