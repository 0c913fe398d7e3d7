"""The Telegram channel end to end: python-telegram-bot (the real library) against the fake Bot API
server, driving the whole pipeline (orchestrator, agent, fake LLM, gateway)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from operator_use.app import App
from operator_use.channels.base import ChannelError, FormattingRejected, NotModified, Refused, RetryAfter
from operator_use.channels.telegram.channel import TelegramChannel
from operator_use.channels.telegram.config import TelegramConfig
from operator_use.config import ConfigError, load_config
from operator_use.messages import Address, AudioPart, FilePart, ImagePart, IncomingMessage
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .fakes.telegram_server import TOKEN, FakeTelegram
from .support.deps import require_module
from .support.pipeline import make_app
from .support.speech import spoken_ogg
from .test_pairing_users import CODE, cli

ALICE = FakeTelegram.user(111, "alice", "Alice")  # allowed by id, admin
BOB = FakeTelegram.user(222, "Bob_TG", "Bob")  # allowed by username
MALLORY = FakeTelegram.user(666, "mallory", "Mallory")  # unknown


@pytest.fixture(autouse=True)
def _ptb() -> None:
    require_module("telegram")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


class Echo:
    """LLM responder: "You said: <text>", streamed in small chunks; records what the model was sent."""

    def __init__(self, chunk_size: int = 3, delay: float = 0.0) -> None:
        self.requests: list[FakeRequest] = []
        self.chunk_size, self.delay = chunk_size, delay

    def __call__(self, request: FakeRequest) -> Reply:
        self.requests.append(request)
        return Reply(
            text=f"You said: {request.last_user_text()}", chunk_size=self.chunk_size, delay_per_chunk=self.delay
        )

    def user_texts(self) -> list[str]:
        return [r.last_user_text() for r in self.requests]

    def history(self, i: int) -> str:
        return json.dumps(self.requests[i].messages)


def channel_for(fake: FakeTelegram, home: Path, **overrides: Any) -> TelegramChannel:
    settings: dict[str, Any] = {
        "enabled": True,
        "token": TOKEN,
        "base_url": fake.base_url,
        "base_file_url": fake.base_file_url,
        "allow_from": ["111"],
        "allow_names": ["@Bob_TG"],
        "admins": ["111"],
        "edit_interval": 0.05,
        "poll_timeout": 5,
    }
    settings.update(overrides)
    return TelegramChannel(TelegramConfig(**settings), workspace=home / "workspace")


def llm_of(server: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)


def texts(fake: FakeTelegram, chat_id: int, thread: int | None = None) -> list[str]:
    return [m.text for m in fake.messages_in(chat_id, thread)]


def has_text(fake: FakeTelegram, chat_id: int, text: str, thread: int | None = None) -> Callable[[], bool]:
    return lambda: text in texts(fake, chat_id, thread)


class LogWatch(logging.Handler):
    """Collects log records and lets a test wait for one (an event, not a sleep)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._loop.call_soon_threadsafe(self._changed.set)

    def count(self, fragment: str) -> int:
        return sum(fragment in r.getMessage() for r in self.records)

    async def wait_for(self, fragment: str, times: int = 1, timeout: float = 20.0) -> None:
        async def wait() -> None:
            while self.count(fragment) < times:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def logwatch() -> AsyncIterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("operator_use.channels.telegram")
    logger.addHandler(watch)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(old)


# --- private chats, streaming -----------------------------------------------------------------


async def test_private_message_gets_one_streamed_reply(
    home: Path, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, httpx and python-telegram-bot included: no token anywhere
    httpx_logger = logging.getLogger("httpx")
    httpx_logger.setLevel(logging.INFO)  # as if configured so: its request lines carry the token in the URL
    answer = "Here is **the answer**, streamed in small pieces so that the message is edited several times."
    shown = answer.replace("**", "")
    llm_replies = [Reply(text=answer, chunk_size=4, delay_per_chunk=0.02), Reply(text="You are welcome.")]
    async with FakeLLMServer(llm_replies) as llm:
        async with make_app(home, channel_for(fake, home, edit_interval=0.1), llm_of(llm)) as app:
            chat = fake.private_chat(ALICE)
            first = fake.send_text(chat, ALICE, "hello bot")
            await fake.wait_for(has_text(fake, 111, shown))
            # A second exchange: everything the gateway would still do for the first reply comes before it.
            fake.send_text(chat, ALICE, "thanks")
            await fake.wait_for(has_text(fake, 111, "You are welcome."))
            assert app.gateway is not None and app.gateway.status() == {"telegram": "up"}

    sends = fake.calls_to("sendMessage", ok=True)
    assert len(sends) == 2 and texts(fake, 111) == [shown, "You are welcome."]  # never sent twice
    reply = fake.messages_in(111)[0]
    assert (
        reply.html == "Here is <b>the answer</b>, streamed in small pieces so that the message is edited several times."
    )  # parse_mode HTML
    assert reply.reply_to == fake.message_of(first)["message_id"]  # quotes the user's message
    assert len(reply.edits) >= 2 and reply.edits[-1] == shown
    # Throttled: fewer edits than deltas, never two within edit_interval (0.1 s; the times are taken where the
    # fake receives the calls, so 30 ms are left for their transit).
    assert len(reply.edits) < len(answer) // 4
    gaps = [b - a for a, b in zip([reply.sent_at, *reply.edit_times], reply.edit_times, strict=False)]
    assert min(gaps) >= 0.07
    assert any(c.params.get("action") == "typing" for c in fake.calls_to("sendChatAction"))
    # The "/" menu holds the orchestrator's commands for everyone (admin-only /restart left out).
    names = [c["command"] for c in fake.commands or []]
    assert {"start", "help", "status", "stop", "new"} <= set(names) and "restart" not in names
    httpx_logger.setLevel(logging.NOTSET)
    assert TOKEN not in caplog.text
    assert "/bot[REDACTED]/sendMessage" in caplog.text  # the httpx lines were there, redacted


async def test_unreachable_at_start_the_gateway_keeps_trying(home: Path, fake: FakeTelegram) -> None:
    await fake.go_down()
    async with FakeLLMServer(responder=Echo()) as llm:
        config = load_config(home=home, agent={"workspace": home / "workspace"})
        app = App(
            config,
            channels=[channel_for(fake, home)],
            llm=llm_of(llm),
            tools=[],
            gateway_options={"start_retry_base": 0.2},
        )
        async with app:
            assert app.gateway is not None and app.gateway.status() == {"telegram": "down"}
            await fake.come_back()
            fake.send_text(fake.private_chat(ALICE), ALICE, "are you up now?")
            await fake.wait_for(has_text(fake, 111, "You said: are you up now?"))
            assert app.gateway.status() == {"telegram": "up"}


async def test_bot_api_errors_reach_the_gateway_as_its_own(home: Path, fake: FakeTelegram) -> None:
    channel = channel_for(fake, home, flood_retries=0)
    published: list[Any] = []

    async def publish(message: Any) -> None:
        published.append(message)

    fake.send_text(fake.private_chat(ALICE), ALICE, "hi")  # the chat exists once someone wrote in it
    await channel.start(publish)
    try:
        here = Address(channel="telegram", chat_id="111")
        message_id = await channel.send(here, "<b>bold</b> start")
        await channel.edit(here, message_id, "<b>bold</b> more")
        with pytest.raises(NotModified):
            await channel.edit(here, message_id, "<b>bold</b> more")
        with pytest.raises(FormattingRejected):
            await channel.send(here, "<blink>no</blink>")
        assert await channel.send(here, "<blink>as plain text</blink>", plain=True)
        fake.flood(1, retry_after=3)
        with pytest.raises(RetryAfter) as flood:
            await channel.edit(here, message_id, "<b>bold</b> later")
        assert flood.value.seconds == 3
        with pytest.raises(Refused):  # a message the user deleted: a stream goes on in a new one
            await channel.edit(here, "999", "nothing there")
        with pytest.raises(ChannelError) as gone:
            await channel.send(Address(channel="telegram", chat_id="424242"), "no such chat")
        assert gone.value.permanent and not isinstance(gone.value, Refused)
        await channel.send_parts(
            here,
            [
                ImagePart(data=b"\x89PNG...", mime="image/png"),
                FilePart(name="notes.txt", mime="text/plain", data=b"some notes"),
                AudioPart(data=b"ID3 mp3 bytes", mime="audio/mpeg", voice_note=False, duration_s=2.4),
                AudioPart(data=b"OggS voice", mime="audio/ogg", duration_s=1.6),
            ],
            reply_to="1",
        )
    finally:
        await channel.stop()
    kinds = [(m.kind, m.mime, m.file_name, m.data) for m in fake.messages_in(111)[2:]]
    assert kinds == [
        ("photo", "image/png", "image.png", b"\x89PNG..."),
        ("document", "text/plain", "notes.txt", b"some notes"),
        ("audio", "audio/mpeg", "audio.mp3", b"ID3 mp3 bytes"),
        ("voice", "audio/ogg", "voice.ogg", b"OggS voice"),
    ]
    assert all(m.reply_to == 1 for m in fake.messages_in(111)[2:])
    assert fake.calls_to("sendVoice")[0].params["duration"] == "2"


# --- groups -----------------------------------------------------------------------------------


async def test_group_answers_only_when_mentioned_or_replied_to(home: Path, fake: FakeTelegram) -> None:
    echo = Echo()
    group = fake.group(-100500, "Team")
    async with FakeLLMServer(responder=echo) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)):
            fake.send_text(group, ALICE, "just chatting among humans")
            fake.send_text(group, ALICE, "@operator_test_bot what is two plus two?")
            await fake.wait_for(has_text(fake, -100500, "You said: what is two plus two?"))
            bot_message = fake.messages_in(-100500)[0].message_id
            fake.send_text(group, ALICE, "and three plus three?", reply_to=bot_message)
            await fake.wait_for(has_text(fake, -100500, "You said: and three plus three?"))
            fake.send_text(group, ALICE, "/help@another_bot")
            fake.send_text(group, ALICE, "/status")
            await fake.wait_for(lambda: len(fake.messages_in(-100500)) == 3)

    # The unaddressed message and the command for another bot never reached the agent or the chat.
    assert echo.user_texts() == ["what is two plus two?", "and three plus three?"]
    assert texts(fake, -100500)[1] == "You said: and three plus three?"
    assert texts(fake, -100500)[2].startswith("Model: ")


async def test_a_command_for_another_bot_never_runs_here(home: Path, fake: FakeTelegram) -> None:
    echo = Echo()
    group = fake.group(-100500, "Team")
    async with FakeLLMServer(responder=echo) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)) as app:
            fake.send_text(group, ALICE, "@operator_test_bot remember the number 7")
            await fake.wait_for(has_text(fake, -100500, "You said: remember the number 7"))
            await app.orchestrator.lanes.idle()  # the turn is saved
            # The mention is stripped before the command is read: still the other bot's /new.
            fake.send_text(group, ALICE, "@operator_test_bot /new@otherbot")
            # Whatever a channel lets through: the orchestrator knows the bot's name there too.
            await app.bus.publish_incoming(
                IncomingMessage.of_text("telegram", "-100500", "111", "/new@OtherBot", is_direct=False, mentioned=True)
            )
            fake.send_text(group, ALICE, "/status@Operator_Test_Bot")  # ours, in any case
            await fake.wait_for(lambda: any(t.startswith("Model: ") for t in texts(fake, -100500)))
            session = await app.sessions.load("telegram:-100500")
    assert not any(t.startswith("Started a new conversation") for t in texts(fake, -100500))
    assert len(session.messages) == 2 and echo.user_texts() == ["remember the number 7"]


async def test_the_channel_drops_another_bots_command_behind_a_mention(home: Path, fake: FakeTelegram) -> None:
    channel = channel_for(fake, home)
    published: list[IncomingMessage] = []
    arrived = asyncio.Event()

    async def publish(message: IncomingMessage) -> None:
        published.append(message)
        arrived.set()

    group = fake.group(-100500, "Team")
    await channel.start(publish)
    try:
        fake.send_text(group, ALICE, "@operator_test_bot /new@otherbot")
        fake.send_text(group, ALICE, "@operator_test_bot, /help@otherbot")
        fake.send_text(group, ALICE, "@operator_test_bot /help")  # ours: the mention names this bot
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        await channel.stop()
    assert [m.text for m in published] == ["/help"]
    assert channel.bot_name == "operator_test_bot"


async def test_group_policy_never_and_always(home: Path, fake: FakeTelegram) -> None:
    echo = Echo()
    group = fake.group(-100600, "Quiet")
    async with FakeLLMServer(responder=echo) as llm:
        async with make_app(home, channel_for(fake, home, group_policy="never"), llm_of(llm)):
            fake.send_text(group, ALICE, "@operator_test_bot are you there?")
            fake.send_text(fake.private_chat(ALICE), ALICE, "in private")
            await fake.wait_for(has_text(fake, 111, "You said: in private"))
        assert echo.user_texts() == ["in private"] and fake.messages_in(-100600) == []

        async with make_app(home, channel_for(fake, home, group_policy="always"), llm_of(llm)):
            fake.send_text(group, BOB, "no mention needed")
            await fake.wait_for(has_text(fake, -100600, "You said: no mention needed"))


async def test_forum_topics_keep_separate_histories_commands_included(home: Path, fake: FakeTelegram) -> None:
    echo = Echo()
    forum = fake.group(-100700, "Forum", forum=True)
    async with FakeLLMServer(responder=echo) as llm:
        async with make_app(home, channel_for(fake, home, group_policy="always"), llm_of(llm)) as app:
            fake.send_text(forum, ALICE, "my fruit is apple", thread_id=11)
            await fake.wait_for(has_text(fake, -100700, "You said: my fruit is apple", thread=11))
            fake.send_text(forum, ALICE, "my fruit is pear", thread_id=22)
            await fake.wait_for(has_text(fake, -100700, "You said: my fruit is pear", thread=22))
            fake.send_text(forum, ALICE, "which fruit?", thread_id=11)
            await fake.wait_for(has_text(fake, -100700, "You said: which fruit?", thread=11))
            # /new in topic 22 starts over there only.
            await app.orchestrator.lanes.idle()  # the turn is saved, not only shown
            fake.send_text(forum, ALICE, "/new", thread_id=22)
            await fake.wait_for(
                lambda: any(t.startswith("Started a new conversation") for t in texts(fake, -100700, 22))
            )
            fake.send_text(forum, ALICE, "which fruit now?", thread_id=22)
            await fake.wait_for(has_text(fake, -100700, "You said: which fruit now?", thread=22))
            await app.orchestrator.lanes.idle()
            fake.send_text(forum, ALICE, "/status", thread_id=11)
            await fake.wait_for(lambda: any(t.startswith("Model: ") for t in texts(fake, -100700, 11)))
            topic_11 = await app.sessions.load("telegram:-100700:11")
            topic_22 = await app.sessions.load("telegram:-100700:22")

    assert "apple" in echo.history(2) and "pear" not in echo.history(2)
    assert "pear" not in echo.history(3) and "apple" not in echo.history(3)
    assert len(topic_11.messages) == 4 and len(topic_22.messages) == 2
    status_11 = next(t for t in texts(fake, -100700, 11) if t.startswith("Model: "))
    assert "4 messages" in status_11
    # Every reply and typing indicator went to its own topic; nothing landed outside the topics.
    assert fake.messages_in(-100700, None) == []
    threads = {c.params.get("message_thread_id") for c in fake.calls_to("sendChatAction")}
    assert threads <= {"11", "22"}


# --- flood control ----------------------------------------------------------------------------


async def test_429_storm_loses_no_text(home: Path, fake: FakeTelegram) -> None:
    paragraphs = [f"Paragraph {i}: " + " ".join(f"word{i}x{j}" for j in range(60)) for i in range(12)]
    answer = "\n\n".join(paragraphs)
    assert len(answer) > 5000  # two Telegram messages
    fake.flood(3, retry_after=1)
    async with FakeLLMServer([Reply(text=answer, chunk_size=250)]) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)) as app:
            fake.send_text(fake.private_chat(ALICE), ALICE, "write a lot")

            def complete() -> bool:
                return "".join("".join(texts(fake, 111)).split()) == "".join(answer.split())

            await fake.wait_for(complete, timeout=30)
            assert app.gateway is not None
            stats = app.gateway.editor.stats

    assert len([c for c in fake.calls if c.status == 429]) == 3
    # The library retried once by itself; what it gave up on reached the gateway as RetryAfter.
    assert stats.retry_after >= 1
    assert len(fake.calls_to("sendMessage", ok=True)) == 2
    assert all(len(t) <= 4096 for t in texts(fake, 111))


# --- lengths and refusals --------------------------------------------------------------------


def emoji_answer(total: int) -> str:
    """Paragraphs whose words carry emoji outside the BMP (two UTF-16 code units each, a family more)."""
    emoji = ["😀", "🚀", "👍🏽", "🎉", "🔥", "👨‍👩‍👧"]
    paragraphs, n = [], 0
    while sum(len(p) + 2 for p in paragraphs) < total:
        paragraphs.append(" ".join(f"{emoji[(n + i) % 6]}word{n + i}{emoji[(n + i + 2) % 6]}" for i in range(45)) + ".")
        n += 45
    return "\n\n".join(paragraphs)


def arrived_whole(fake: FakeTelegram, answer: str) -> Callable[[], bool]:
    return lambda: "".join("".join(texts(fake, 111)).split()) == "".join(answer.split())


async def test_an_emoji_heavy_reply_of_8000_characters_arrives_whole(home: Path, fake: FakeTelegram) -> None:
    answer = emoji_answer(8489)
    assert len(answer) >= 8489 and len(answer.encode("utf-16-le")) // 2 > 1.2 * len(answer)
    async with FakeLLMServer([Reply(text=answer, chunk_size=250)]) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)) as app:
            fake.send_text(fake.private_chat(ALICE), ALICE, "emoji please")
            await fake.wait_for(arrived_whole(fake, answer), timeout=30)
            assert app.gateway is not None
            stats = app.gateway.editor.stats
    # Measured as Telegram counts: no message ever went over, so nothing was refused.
    assert [c for c in fake.calls if c.status == 400] == [] and stats.too_long == 0
    assert all(len(t.encode("utf-16-le")) // 2 <= 4096 for t in texts(fake, 111))


async def test_a_too_long_refusal_cuts_smaller_and_loses_nothing(home: Path, fake: FakeTelegram) -> None:
    answer = emoji_answer(8489)
    channel = channel_for(fake, home)
    # As if Telegram counted differently from what the channel declares: it refuses, we cut smaller.
    channel.capabilities = channel.capabilities.model_copy(update={"length_unit": "chars"})
    async with FakeLLMServer([Reply(text=answer, chunk_size=250)]) as llm:
        async with make_app(home, channel, llm_of(llm)) as app:
            fake.send_text(fake.private_chat(ALICE), ALICE, "emoji please")
            await fake.wait_for(arrived_whole(fake, answer), timeout=30)
            assert app.gateway is not None
            stats = app.gateway.editor.stats
    refused = [c for c in fake.calls if c.status == 400]
    assert refused and all(c.method in ("sendMessage", "editMessageText") for c in refused)
    assert stats.too_long == len(refused) and stats.undelivered_chars == 0
    assert not any("could not be delivered" in t for t in texts(fake, 111))


async def test_a_reply_deleted_mid_stream_goes_on_in_a_new_message(home: Path, fake: FakeTelegram) -> None:
    answer = " ".join(f"word{i}" for i in range(1500))  # about 10,000 characters: three messages
    gate = asyncio.Event()
    async with FakeLLMServer([Reply(text=answer, chunk_size=40, gate=gate)]) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)) as app:
            fake.send_text(fake.private_chat(ALICE), ALICE, "a long one please")
            await fake.wait_for(lambda: texts(fake, 111) == [answer[:40].rstrip()])  # the first chunk, shown
            first = fake.delete_message(111, fake.messages_in(111)[0].message_id)  # the user deletes it
            gate.set()
            await fake.wait_for(lambda: "word1499" in " ".join(texts(fake, 111)), timeout=30)
            assert app.gateway is not None
            stats = app.gateway.editor.stats
    # Telegram answered the next edit "message to edit not found"; the rest went on in new messages, whole.
    assert any(c.method == "editMessageText" and c.status == 400 for c in fake.calls)
    rest = "".join("".join(texts(fake, 111)).split())
    assert "".join(first.text.split()) + rest == "".join(answer.split())
    assert stats.errors == 0 and stats.undelivered_chars == 0
    assert not any("could not be delivered" in t for t in texts(fake, 111))


async def test_an_unreadable_update_is_skipped_and_polling_goes_on(
    home: Path, fake: FakeTelegram, logwatch: LogWatch
) -> None:
    echo = Echo()
    chat = fake.private_chat(ALICE)
    # One batch: a good update, one without message_id and date, another good one.
    fake.send_text(chat, ALICE, "before")
    bad = fake.push_update({"message": {"chat": chat, "from": ALICE, "text": "no id, no date"}})
    fake.send_text(chat, ALICE, "after")
    async with FakeLLMServer(responder=echo) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)):
            await fake.wait_for(has_text(fake, 111, "You said: after"), timeout=10)
            await logwatch.wait_for(f"update {bad} could not be read")
            fake.send_text(chat, ALICE, "later")
            await fake.wait_for(has_text(fake, 111, "You said: later"), timeout=10)
    assert echo.user_texts() == ["before", "after", "later"]
    polls = fake.calls_to("getUpdates")
    assert any(int(c.params.get("offset") or 0) > bad for c in polls)  # confirmed: never fetched again
    assert len(polls) < 20  # long polls, not a loop refetching the same batch


# --- access -----------------------------------------------------------------------------------


async def test_unknown_user_is_refused_restart_included(home: Path, fake: FakeTelegram) -> None:
    echo = Echo()
    async with FakeLLMServer(responder=echo) as llm:
        channel = channel_for(fake, home, rejection_message="Sorry, this agent is private.")
        async with make_app(home, channel, llm_of(llm)) as app:
            mallory = fake.private_chat(MALLORY)
            fake.send_text(mallory, MALLORY, "hello")
            fake.send_text(mallory, MALLORY, "/restart")
            fake.send_text(mallory, MALLORY, "/new")
            await fake.wait_for(lambda: len(fake.messages_in(666)) == 3)
            assert not app.restart_requested
            # Allowed by username (written "@Bob_TG" in allow_names, matched case-insensitively).
            fake.send_text(fake.private_chat(BOB), BOB, "hi from bob")
            await fake.wait_for(has_text(fake, 222, "You said: hi from bob"))
            # Bob is allowed but not an admin; Alice is.
            fake.send_text(fake.private_chat(BOB), BOB, "/restart")
            await fake.wait_for(has_text(fake, 222, "/restart is for admins only."))
            assert not app.restart_requested
            fake.send_text(fake.private_chat(ALICE), ALICE, "/restart")
            await fake.wait_for(has_text(fake, 111, "Restarting..."))
            await asyncio.wait_for(app.wait_closed(), 10)
            assert app.restart_requested

    assert texts(fake, 666) == ["Sorry, this agent is private."] * 3
    assert echo.user_texts() == ["hi from bob"]


# --- duplicates and reconnects ----------------------------------------------------------------


async def test_duplicated_update_is_answered_once(home: Path, fake: FakeTelegram, logwatch: LogWatch) -> None:
    echo = Echo()
    chat = fake.private_chat(ALICE)
    async with FakeLLMServer(responder=echo) as llm:
        channel = channel_for(fake, home)
        async with make_app(home, channel, llm_of(llm)):
            # Delivered twice in one batch.
            first = fake.send_text(chat, ALICE, "count me once")
            fake.redeliver(first)
            await fake.wait_for(has_text(fake, 111, "You said: count me once"))
            # After a restart whose offset never reached the server, the update comes back.
            await channel.disconnect()
            fake.redeliver(first)
            await channel.connect()
            fake.send_text(chat, ALICE, "second message")
            await fake.wait_for(has_text(fake, 111, "You said: second message"))

    assert echo.user_texts() == ["count me once", "second message"]
    assert texts(fake, 111) == ["You said: count me once", "You said: second message"]
    assert logwatch.count(f"update {first} delivered again") == 2


async def test_polling_survives_the_server_going_down(home: Path, fake: FakeTelegram, logwatch: LogWatch) -> None:
    echo = Echo()
    chat = fake.private_chat(ALICE)
    async with FakeLLMServer(responder=echo) as llm:
        channel = channel_for(fake, home)
        async with make_app(home, channel, llm_of(llm)) as app:
            assert app.gateway is not None
            fake.send_text(chat, ALICE, "before the outage")
            await fake.wait_for(has_text(fake, 111, "You said: before the outage"))

            await fake.go_down()
            fake.send_text(chat, ALICE, "sent during the outage")
            fake.send_text(chat, ALICE, "also during the outage")
            # The open long poll is cut; then a retry finds the port closed. These waits are the client's
            # own backoff (1 s, then 1.5 s), not sleeps of ours.
            await logwatch.wait_for("polling lost")
            await logwatch.wait_for("still reconnecting")
            assert app.gateway.status() == {"telegram": "reconnecting"}
            assert fake.pending_updates == 2

            await fake.come_back()
            await fake.wait_for(has_text(fake, 111, "You said: also during the outage"))
            await logwatch.wait_for("polling reconnected")
            assert app.gateway.status() == {"telegram": "up"}

    assert echo.user_texts() == ["before the outage", "sent during the outage", "also during the outage"]
    assert texts(fake, 111) == [
        "You said: before the outage",
        "You said: sent during the outage",
        "You said: also during the outage",
    ]


# --- media ------------------------------------------------------------------------------------


async def test_photo_goes_to_the_model_and_document_to_the_workspace(home: Path, fake: FakeTelegram) -> None:
    echo = Echo()
    small, large = b"\xff\xd8small-jpeg", b"\xff\xd8large-jpeg-with-more-bytes"
    pdf = b"%PDF-1.4 fake document"
    chat = fake.private_chat(ALICE)
    async with FakeLLMServer(responder=echo) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)):
            fake.send_photo(chat, ALICE, [(90, small), (800, large)], caption="what is this?")
            await fake.wait_for(has_text(fake, 111, "You said: what is this?"))
            fake.send_document(chat, ALICE, pdf, "../../Quarterly report.pdf", mime="application/pdf")
            await fake.wait_for(lambda: len(fake.messages_in(111)) == 2)

    photo_request = echo.history(0)
    assert base64.b64encode(large).decode() in photo_request and base64.b64encode(small).decode() not in photo_request
    saved = list((home / "workspace" / "inbox").iterdir())
    assert len(saved) == 1 and saved[0].name.endswith("-Quarterly_report.pdf") and saved[0].read_bytes() == pdf
    assert f"saved at {saved[0]}" in echo.user_texts()[1]


async def test_an_unknown_senders_files_are_never_fetched_until_the_owner_approves(
    home: Path, fake: FakeTelegram
) -> None:
    echo = Echo()
    mallory, alice = fake.private_chat(MALLORY), fake.private_chat(ALICE)
    inbox = home / "workspace" / "inbox"
    async with FakeLLMServer(responder=echo) as llm:
        async with make_app(home, channel_for(fake, home, pairing=True), llm_of(llm)):
            # Updates are handled one at a time: a stranger's downloads would hold up alice behind them.
            fake.send_document(mallory, MALLORY, b"junk" * 4096, "junk.bin")
            fake.send_photo(mallory, MALLORY, [(800, b"\xff\xd8junk")], caption="look")
            fake.send_voice(mallory, MALLORY, b"OggS" + bytes(64))
            fake.send_text(alice, ALICE, "hello")
            await fake.wait_for(has_text(fake, 111, "You said: hello"))
            assert fake.calls_to("getFile") == [] and not inbox.exists()
            # The document alone still reached the orchestrator: it earned a pairing code.
            await fake.wait_for(lambda: len(fake.messages_in(666)) == 1)
            code = CODE.search(texts(fake, 666)[0])
            assert code is not None
            rc, _ = await cli(home, "pairing", "approve", code.group(1))
            assert rc == 0
            # Approved from the CLI (another process): the very next file is fetched, as an allowed user's is.
            fake.send_document(mallory, MALLORY, b"%PDF from mallory", "notes.pdf")
            await fake.wait_for(lambda: len(fake.messages_in(666)) == 2)
            fake.send_document(alice, ALICE, b"%PDF from alice", "alice.pdf")
            await fake.wait_for(lambda: len(fake.messages_in(111)) == 2)

    assert sorted(p.read_bytes() for p in inbox.iterdir()) == [b"%PDF from alice", b"%PDF from mallory"]
    assert len(fake.calls_to("getFile")) == 2
    assert echo.user_texts()[0] == "hello" and len(echo.requests) == 3
    assert "notes.pdf" in echo.user_texts()[1] and "alice.pdf" in echo.user_texts()[2]


async def test_local_bot_api_server_files_and_the_20mb_limit(home: Path, tmp_path: Path) -> None:
    echo = Echo()
    big = b"x" * (20 * 1024 * 1024 + 1)
    chat_of = FakeTelegram.private_chat
    async with FakeLLMServer(responder=echo) as llm:
        # Through the public API a file over 20 MB cannot be fetched: the agent is told so.
        async with FakeTelegram() as public, make_app(home, channel_for(public, home), llm_of(llm)):
            public.send_document(chat_of(public, ALICE), ALICE, big, "big.bin", caption="here it is")
            await public.wait_for(lambda: len(public.messages_in(111)) == 1)
        assert "here it is" in echo.user_texts()[0] and "file is too big" in echo.user_texts()[0].lower()
        # A local server (--local) hands out paths on its disk: the file is copied, whatever its size.
        async with FakeTelegram(local_dir=tmp_path / "bot-api") as local:
            async with make_app(home, channel_for(local, home, local_mode=True), llm_of(llm)):
                local.send_document(chat_of(local, ALICE), ALICE, big, "big.bin")
                await local.wait_for(lambda: len(local.messages_in(111)) == 1)
    saved = list((home / "workspace" / "inbox").iterdir())
    assert len(saved) == 1 and saved[0].stat().st_size == len(big)
    assert f"saved at {saved[0]}" in echo.user_texts()[1]


async def test_voice_note_in_voice_note_back(home: Path, fake: FakeTelegram) -> None:
    require_module("faster_whisper")
    require_module("av")
    question = await spoken_ogg("What is the capital of France?")
    heard: list[str] = []

    def respond(request: FakeRequest) -> Reply:
        heard.append(request.last_user_text())
        return Reply(text="Paris is the capital of France.")

    chat = fake.private_chat(ALICE)
    async with FakeLLMServer(responder=respond) as llm:
        async with make_app(home, channel_for(fake, home), llm_of(llm)):
            voice_in = fake.send_voice(chat, ALICE, question, duration=2)
            await fake.wait_for(lambda: bool(fake.messages_in(111, kind="voice")), timeout=120)

    assert "capital" in heard[0].lower() and "france" in heard[0].lower()
    assert texts(fake, 111)[0] == "Paris is the capital of France."
    voice_out = fake.messages_in(111, kind="voice")[0]
    assert voice_out.mime == "audio/ogg" and voice_out.data.startswith(b"OggS")
    assert voice_out.reply_to == fake.message_of(voice_in)["message_id"]


# --- webhook ----------------------------------------------------------------------------------


def test_webhook_config_is_validated() -> None:
    base = {"enabled": True, "token": TOKEN, "mode": "webhook"}
    with pytest.raises(ValidationError, match="webhook_url"):
        TelegramConfig(**base, webhook_secret="abc")
    with pytest.raises(ValidationError, match="webhook_secret"):
        TelegramConfig(**base, webhook_url="https://bot.example.org/tg")
    with pytest.raises(ValidationError, match="1-256 characters"):
        TelegramConfig(**base, webhook_url="https://bot.example.org/tg", webhook_secret="not allowed!")
    with pytest.raises(ValidationError, match="https"):
        TelegramConfig(**base, webhook_url="http://bot.example.org/tg", webhook_secret="abc")
    # Plain http is for one's own Bot API server.
    TelegramConfig(**base, webhook_url="http://10.0.0.2/tg", webhook_secret="abc", base_url="http://127.0.0.1:8081/bot")
    with pytest.raises(ValidationError, match="token is required"):
        TelegramConfig(enabled=True)
    with pytest.raises(ValidationError, match="bot token"):
        TelegramConfig(token="not-a-token")
    with pytest.raises(ConfigError, match=r"channels.telegram"):
        load_config(channels={"telegram": {"enabled": True, "token": TOKEN, "mode": "webhook"}})
    config = load_config(
        channels={"telegram": {"enabled": True, "token": TOKEN, "allow_from": [" 42 "], "allow_names": ["@Alice"]}}
    )
    assert config.channels.telegram.allow_from == ["42"] and config.channels.telegram.allow_names == ["alice"]
    assert TOKEN not in json.dumps(config.masked())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_webhook_delivery_checks_the_secret_and_drops_retries(home: Path, fake: FakeTelegram) -> None:
    echo = Echo()
    port = _free_port()
    channel = channel_for(
        fake,
        home,
        mode="webhook",
        webhook_url="https://bot.example.org/hook/tg",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_path="hook/tg",
        webhook_secret="s3cret-Token_1",
    )
    chat = fake.private_chat(ALICE)
    url = f"http://127.0.0.1:{port}/hook/tg"
    async with FakeLLMServer(responder=echo) as llm, aiohttp.ClientSession() as http:
        async with make_app(home, channel, llm_of(llm)):
            assert fake.webhook == {
                "url": "https://bot.example.org/hook/tg",
                "secret_token": "s3cret-Token_1",
                "allowed_updates": ["message", "callback_query"],  # button presses too
            }
            update = fake.update_of(fake.send_text(chat, ALICE, "via webhook"))
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
                async with http.post(url, json=update, headers=headers) as response:
                    assert response.status == 403
            good = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"}
            for _ in range(2):  # Telegram retries a delivery it thinks failed
                async with http.post(url, json=update, headers=good) as response:
                    assert response.status == 200
            later = fake.update_of(fake.send_text(chat, ALICE, "second via webhook"))
            async with http.post(url, json=later, headers=good) as response:
                assert response.status == 200
            await fake.wait_for(has_text(fake, 111, "You said: second via webhook"))

    assert echo.user_texts() == ["via webhook", "second via webhook"]
    assert texts(fake, 111) == ["You said: via webhook", "You said: second via webhook"]
    assert fake.calls_to("getUpdates") == []


async def test_an_unreadable_webhook_update_is_acknowledged_and_skipped(
    home: Path, fake: FakeTelegram, logwatch: LogWatch
) -> None:
    echo = Echo()
    port = _free_port()
    channel = channel_for(
        fake,
        home,
        mode="webhook",
        webhook_url="https://bot.example.org/tg",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_path="tg",
        webhook_secret="s3cret",
    )
    chat = fake.private_chat(ALICE)
    url, good = f"http://127.0.0.1:{port}/tg", {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
    async with FakeLLMServer(responder=echo) as llm, aiohttp.ClientSession() as http:
        async with make_app(home, channel, llm_of(llm)):
            bad = fake.update_of(fake.push_update({"message": {"chat": chat, "from": ALICE, "text": "no id, no date"}}))
            # A 200, so Telegram moves on: a 400 would have it deliver this update again and again, with every
            # later update waiting behind it.
            async with http.post(url, json=bad, headers=good) as response:
                assert response.status == 200
            await logwatch.wait_for(f"update {bad['update_id']} could not be read")
            async with http.post(url, json={"message": bad["message"]}, headers=good) as response:
                assert response.status == 200  # not even an update id: skipped all the same
            as_json = {**good, "Content-Type": "application/json"}
            async with http.post(url, data=b"not json", headers=as_json) as response:
                assert response.status == 400
            async with http.post(url, data=b"text", headers={**good, "Content-Type": "text/plain"}) as response:
                assert response.status == 415
            later = fake.update_of(fake.send_text(chat, ALICE, "after"))
            async with http.post(url, json=later, headers=good) as response:
                assert response.status == 200
            await fake.wait_for(has_text(fake, 111, "You said: after"))
    assert echo.user_texts() == ["after"]
    assert "no id, no date" not in " ".join(r.getMessage() for r in logwatch.records)  # private: never logged
