"""The Discord channel end to end: the real discord.py client against a fake Discord (REST + gateway
websocket) on 127.0.0.1, driving the real pipeline (orchestrator, agent, fake LLM, gateway)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from operator_use.channels.base import ChannelError, RetryAfter
from operator_use.channels.discord.config import DiscordConfig
from operator_use.gateway.splitting import balanced
from operator_use.messages import Address, AudioPart
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.discord_server import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    ROLE_ID,
    THREAD_ID,
    FakeDiscord,
)
from .fakes.llm_server import FakeLLMServer, Reply
from .support.deps import require_module
from .support.pipeline import Gates, make_app, scripted_responder
from .support.speech import spoken_ogg

TOKEN = "fake-discord-bot-token-SECRET"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    require_module("discord")
    async with FakeDiscord(token=TOKEN) as server:
        server.install(monkeypatch)
        yield server


def observed_channel(home: Path, **config: object):  # type: ignore[no-untyped-def]
    """The real DiscordChannel, also telling the test when a message is finalized."""
    from operator_use.channels.discord.channel import DiscordChannel

    class Observed(DiscordChannel):
        def __init__(self, cfg: DiscordConfig) -> None:
            super().__init__(cfg, workspace=home / "workspace")
            self.finalized: list[str] = []
            self.changed = asyncio.Condition()

        async def finalize(self, address: Address, message_id: str) -> None:
            await super().finalize(address, message_id)
            async with self.changed:
                self.finalized.append(message_id)
                self.changed.notify_all()

        async def wait_finalized(self, predicate: Callable[[list[str]], bool], timeout: float = 20.0) -> None:
            async def check() -> None:
                async with self.changed:
                    await self.changed.wait_for(lambda: predicate(self.finalized))

            await asyncio.wait_for(check(), timeout)

    settings: dict[str, object] = {"enabled": True, "token": TOKEN, "allow_from": ["11"], "edit_interval": 0.05}
    settings.update(config)
    return Observed(DiscordConfig(**settings))


def llm(server: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)


def user_texts(server: FakeLLMServer, index: int = -1) -> list[str]:
    """Texts of the user messages of one LLM request."""
    out = []
    for m in server.requests[index]["messages"]:
        if m["role"] == "user":
            c = m["content"]
            out.append(c if isinstance(c, str) else " ".join(b.get("text", "") for b in c if b.get("type") == "text"))
    return out


# --- direct messages and streaming ---------------------------------------------------------------


async def test_dm_reply_is_streamed_into_one_message_edited_in_place(home: Path, fake: FakeDiscord,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answer = "Streaming into Discord works: " + " ".join(f"word{i}" for i in range(60)) + "."
    async with FakeLLMServer([Reply(text=answer, chunk_size=12, delay_per_chunk=0.01)]) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)) as app:
            assert app.gateway.status()["discord"] == "up"
            asked = await fake.user_message(DM_CHANNEL_ID, "hello there", author=ALICE)
            await channel.wait_finalized(lambda f: len(f) == 1)
            [message] = fake.in_channel(DM_CHANNEL_ID)
            assert message["content"] == answer
            assert channel.finalized == [message["id"]]
            # One message, posted once and edited in place several times; the last edit is the answer.
            assert len(fake.edits[message["id"]]) >= 2 and fake.edits[message["id"]][-1] == answer
            assert message["message_reference"]["message_id"] == asked["id"]
            assert DM_CHANNEL_ID in fake.typing
            assert fake.heartbeats >= 1  # and each was acknowledged (op 11), or discord.py would reconnect
            assert user_texts(server) == ["hello there"]
    assert TOKEN not in caplog.text


async def test_unknown_user_is_refused(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, rejection_message="Sorry, I only talk to my owner.")
        async with make_app(home, channel, llm(server)):
            await fake.user_message(DM_CHANNEL_ID, "let me in", author=BOB)
            await fake.user_message(CHANNEL_ID, "me too", author=BOB, guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 2)
            assert [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)] == ["Sorry, I only talk to my owner."]
            assert [m["content"] for m in fake.in_channel(CHANNEL_ID)] == ["Sorry, I only talk to my owner."]
            assert server.requests == []  # the model never saw them


async def test_allowlist_by_role_and_by_guild(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, allow_roles=[ROLE_ID], rejection_message="no")
        async with make_app(home, channel, llm(server)):
            # Carol is not in allow_from but holds the role: allowed in the guild...
            await fake.user_message(CHANNEL_ID, "role check", author=CAROL, guild_id=GUILD_ID, roles=[ROLE_ID],
                                    mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(CHANNEL_ID)[-1]["content"] == "You said: role check"
            # ...but in a direct message there is no role to go by.
            await fake.user_message(DM_CHANNEL_ID, "dm check", author=CAROL)
            await channel.wait_finalized(lambda f: len(f) == 2)
            assert fake.in_channel(DM_CHANNEL_ID)[-1]["content"] == "no"
            assert len(server.requests) == 1

    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, allow_guilds=[GUILD_ID])
        async with make_app(home, channel, llm(server)):
            await fake.user_message(CHANNEL_ID, "guild check", author=BOB, guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(CHANNEL_ID)[-1]["content"] == "You said: guild check"


# --- guild channels and threads ------------------------------------------------------------------


async def test_guild_message_needs_a_mention_or_a_reply(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)) as app:
            await fake.user_message(CHANNEL_ID, "just chatting with friends", guild_id=GUILD_ID)
            await fake.user_message(CHANNEL_ID, "what time is it?", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 1)
            # Events are handled in order: the unmentioned message was already passed over.
            assert len(server.requests) == 1
            assert user_texts(server) == ["what time is it?"]  # the mention itself is stripped
            [answer] = fake.in_channel(CHANNEL_ID)
            assert answer["content"] == "You said: what time is it?"
            # Replying to the bot's message counts as addressing it.
            await fake.user_message(CHANNEL_ID, "and tomorrow?", guild_id=GUILD_ID, reply_to=answer["id"])
            await channel.wait_finalized(lambda f: len(f) == 2)
            assert user_texts(server) == ["what time is it?", "and tomorrow?"]
            assert len((await app.sessions.load(f"discord:{CHANNEL_ID}")).messages) == 4


async def test_reply_policy_per_channel(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, reply_overrides={CHANNEL_ID: "all", THREAD_ID: "never"})
        async with make_app(home, channel, llm(server)):
            await fake.user_message(THREAD_ID, "ignored even when mentioned", guild_id=GUILD_ID, mention_bot=True)
            await fake.user_message(CHANNEL_ID, "no mention needed here", guild_id=GUILD_ID)
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert user_texts(server) == ["no mention needed here"]
            assert fake.in_channel(THREAD_ID) == []


async def test_a_thread_keeps_its_own_history(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)) as app:
            await fake.user_message(CHANNEL_ID, "remember apples", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 1)
            await fake.user_message(THREAD_ID, "what about pears", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 2)
            await fake.user_message(THREAD_ID, "and plums", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 3)
            # Replies went into the thread (a thread is a channel on Discord)...
            assert [m["content"] for m in fake.in_channel(THREAD_ID)] == ["You said: what about pears",
                                                                          "You said: and plums"]
            assert [m["content"] for m in fake.in_channel(CHANNEL_ID)] == ["You said: remember apples"]
            # ...and the thread's history is its own: the channel's message is not in it.
            assert user_texts(server) == ["what about pears", "and plums"]
            thread = await app.sessions.load(f"discord:{CHANNEL_ID}:{THREAD_ID}")
            main = await app.sessions.load(f"discord:{CHANNEL_ID}")
            assert [m.role for m in thread.messages] == ["human", "ai", "human", "ai"]
            assert [m.content for m in main.messages] == ["remember apples", "You said: remember apples"]


# --- attachments and voice -----------------------------------------------------------------------


async def test_voice_message_is_transcribed_and_answered_with_a_voice_note(home: Path, fake: FakeDiscord) -> None:
    require_module("faster_whisper")
    require_module("av")
    question = await spoken_ogg("What is the capital of France?")
    async with FakeLLMServer([Reply(text="Paris is the capital of France.")]) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)):
            voice = fake.attachment("voice-message.ogg", question, "audio/ogg", voice=True, duration=2.0)
            asked = await fake.user_message(DM_CHANNEL_ID, "", attachments=[voice], voice=True)
            # Real speech-to-text (the bundled Whisper model) and text-to-speech: give them time.
            await fake.wait_for(lambda: len(fake.in_channel(DM_CHANNEL_ID)) == 2, timeout=120)
    heard = user_texts(server)[0].lower()
    assert "capital" in heard and "france" in heard
    text_reply, voice_reply = fake.in_channel(DM_CHANNEL_ID)
    assert text_reply["content"] == "Paris is the capital of France."
    [upload] = fake.uploads[voice_reply["id"]]
    assert upload["name"].endswith(".ogg") and upload["data"].startswith(b"OggS")
    assert voice_reply["message_reference"]["message_id"] == asked["id"]


async def test_audio_attachments_become_audio_parts(home: Path, fake: FakeDiscord) -> None:
    heard: list[AudioPart] = []

    async def transcribe(part: AudioPart) -> str:
        heard.append(part)
        return "hello from a recording"

    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)) as app:
            app.orchestrator.transcribe, app.orchestrator.speak = transcribe, None
            ogg = b"OggS" + bytes(range(256))
            voice = fake.attachment("voice-message.ogg", ogg, "audio/ogg", voice=True, duration=2.5)
            await fake.user_message(DM_CHANNEL_ID, "", attachments=[voice], voice=True)
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert heard[0].data == ogg and heard[0].voice_note and heard[0].duration_s == 2.5
            # An audio file (not recorded as a voice message) is audio too, but not a voice note.
            song = fake.attachment("song.mp3", b"ID3" + b"\0" * 64, "audio/mpeg")
            await fake.user_message(DM_CHANNEL_ID, "", attachments=[song])
            await channel.wait_finalized(lambda f: len(f) == 2)
            assert heard[1].mime == "audio/mpeg" and not heard[1].voice_note and heard[1].duration_s is None
            assert [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)] == ["You said: hello from a recording"] * 2


async def test_images_go_to_the_model_and_files_to_the_workspace(home: Path, fake: FakeDiscord) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    pdf = b"%PDF-1.4 fake document"
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)):
            await fake.user_message(DM_CHANNEL_ID, "look at these", attachments=[
                fake.attachment("cat.png", png, "image/png"),
                fake.attachment("../../report.pdf", pdf, "application/pdf"),
            ])
            await channel.wait_finalized(lambda f: len(f) == 1)
            content = server.requests[0]["messages"][-1]["content"]
            assert any(b["type"] == "image_url" for b in content)
            [saved] = list((home / "workspace" / "inbox").iterdir())
            assert saved.read_bytes() == pdf and saved.name.endswith("report.pdf")
            text = " ".join(b.get("text", "") for b in content if b["type"] == "text")
            assert "look at these" in text and str(saved) in text


# --- length, rate limits, reconnects -------------------------------------------------------------


def long_answer() -> str:
    prose = " ".join(f"Sentence number {i} explains a little more." for i in range(38))  # ~1,600 chars
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})  # step {i}" for i in range(30)) + "\n```"
    tail = " ".join(f"Closing remark {i} wraps it up." for i in range(30))
    text = f"{prose}\n\n{code}\n\n{tail}"
    assert 3300 <= len(text) <= 3700, len(text)
    return text


async def test_a_3500_character_answer_becomes_two_messages_without_breaking_the_code_block(
        home: Path, fake: FakeDiscord) -> None:
    answer = long_answer()
    async with FakeLLMServer([Reply(text=answer, chunk_size=150, delay_per_chunk=0.005)]) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)):
            await fake.user_message(DM_CHANNEL_ID, "explain at length")
            await channel.wait_finalized(lambda f: len(f) == 2)
            first, second = fake.in_channel(DM_CHANNEL_ID)
            assert len(first["content"]) <= 2000 and len(second["content"]) <= 2000
            assert balanced(first["content"]) and balanced(second["content"])
            block = answer[answer.index("```python"):answer.index("```", answer.index("```python") + 3) + 3]
            assert block in first["content"] or block in second["content"]
            assert " ".join((first["content"] + " " + second["content"]).split()) == " ".join(answer.split())
            assert channel.finalized == [first["id"], second["id"]]
            assert "message_reference" not in second  # only the first part replies to the question


async def test_long_reply_continues_in_a_thread_when_configured(home: Path, fake: FakeDiscord) -> None:
    answer = long_answer()
    async with FakeLLMServer([Reply(text=answer, chunk_size=150, delay_per_chunk=0.005)]) as server:
        channel = observed_channel(home, thread_long_replies=True)
        async with make_app(home, channel, llm(server)):
            await fake.user_message(CHANNEL_ID, "explain at length", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 2)
            [first] = fake.in_channel(CHANNEL_ID)
            [thread] = fake.threads_started
            assert thread["id"] == first["id"]  # a thread started on the first part of the reply
            [second] = fake.in_channel(thread["id"])
            assert " ".join((first["content"] + " " + second["content"]).split()) == " ".join(answer.split())


def paused_reply(before: str, after: str) -> list[Reply]:
    """A reply streamed in two halves with a tool call between them: the `gate` tool holds the turn (and
    the half-written message) until the test releases it."""
    return [Reply(text=before, chunk_size=16, tool_calls=[{"name": "gate", "arguments": {"name": "g"}}]),
            Reply(text=after, chunk_size=16)]


@pytest.mark.parametrize("via", [True, False], ids=["library-retries", "library-gives-up"])
async def test_a_429_on_edit_loses_nothing(home: Path, fake: FakeDiscord, via: bool) -> None:
    before = "Rate limits must not eat text: " + " ".join(f"piece{i}" for i in range(20)) + "."
    after = "And the rest: " + " ".join(f"more{i}" for i in range(30)) + "."
    gates = Gates()
    async with FakeLLMServer(paused_reply(before, after)) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server), tools=[gates.tool()]) as app:
            await fake.user_message(DM_CHANNEL_ID, "go")
            await gates.wait_entered("g")
            await fake.wait_for(lambda: [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)] == [before])
            # The next edits are refused with 429. With the Via header discord.py waits and retries them
            # itself; without it, it raises and the stream editor waits out Retry-After instead.
            fake.rate_limit("PATCH", times=2, retry_after=0.2, via=via)
            gates.release["g"].set()
            await channel.wait_finalized(lambda f: len(f) == 1)
            [message] = fake.in_channel(DM_CHANNEL_ID)
            assert len(fake.rate_limited) == 2
            assert message["content"] == f"{before}\n\n{after}"
            stats = app.gateway.editor.stats
            assert stats.errors == 0 and stats.retry_after == (0 if via else 2)


async def test_rate_limit_errors_become_retry_after(fake: FakeDiscord) -> None:
    import discord

    from operator_use.channels.discord.errors import platform_errors

    # discord.py raises RateLimited for waits longer than max_ratelimit_timeout instead of sleeping.
    with pytest.raises(RetryAfter) as info, platform_errors("edit"):
        raise discord.RateLimited(45.0)
    assert info.value.seconds == 45.0


async def test_gateway_reconnect_mid_stream_resumes_and_the_reply_completes(
        home: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = "This reply survives a gateway reconnect: " + " ".join(f"part{i}" for i in range(20)) + "."
    after = "Still here after the reconnect."
    gates = Gates()
    async with FakeLLMServer(paused_reply(before, after), responder=scripted_responder) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server), tools=[gates.tool()]) as app:
            await fake.user_message(DM_CHANNEL_ID, "first question")
            await gates.wait_entered("g")
            await fake.wait_for(lambda: [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)] == [before])
            fake.hold_resume = asyncio.Event()
            await fake.reconnect()
            # Written while the bot is away: replayed on RESUME.
            await fake.user_message(DM_CHANNEL_ID, "second question")
            await fake.wait_for(lambda: len(fake.resumes) == 1)
            assert app.gateway.status()["discord"] == "reconnecting"
            gates.release["g"].set()  # the reply goes on streaming over REST meanwhile
            fake.hold_resume.set()
            await channel.wait_finalized(lambda f: len(f) == 2)
            first, second = fake.in_channel(DM_CHANNEL_ID)
            assert first["content"] == f"{before}\n\n{after}"
            assert second["content"] == "You said: second question"
            assert app.gateway.status()["discord"] == "up"
            assert fake.identifies == 1 and fake.connections == ["/gateway", "/gateway-resume"]
            assert fake.resumes[0]["session_id"] == "session-1"
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("operator_use.channels.discord")]
    assert any("disconnected" in m for m in messages) and any("resumed" in m for m in messages)


async def test_a_dropped_gateway_connection_resumes_and_replays_missed_messages(
        home: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home)
        async with make_app(home, channel, llm(server)) as app:
            fake.hold_resume = asyncio.Event()
            await fake.drop()
            await fake.user_message(DM_CHANNEL_ID, "are you still there?")  # missed while away
            await fake.wait_for(lambda: len(fake.resumes) == 1)
            assert app.gateway.status()["discord"] == "reconnecting"
            fake.hold_resume.set()
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(DM_CHANNEL_ID)[0]["content"] == "You said: are you still there?"
            assert fake.identifies == 1 and fake.connections == ["/gateway", "/gateway-resume"]
            assert app.gateway.status()["discord"] == "up"
    assert any("resumed" in r.getMessage() for r in caplog.records if r.name.startswith("operator_use"))


async def test_a_wrong_token_is_refused_without_being_logged(home: Path, fake: FakeDiscord,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from operator_use.channels.discord.channel import DiscordChannel

    caplog.set_level(logging.DEBUG)
    channel = DiscordChannel(DiscordConfig(enabled=True, token="wrong-token-XYZ"), workspace=home / "workspace")
    with pytest.raises(ChannelError) as info:
        await channel.start(lambda message: asyncio.sleep(0))
    assert info.value.permanent and channel.status() == "down"
    assert "wrong-token-XYZ" not in caplog.text and "wrong-token-XYZ" not in str(info.value)
    assert "**********" in repr(channel.discord_config.token)


def test_config_requires_a_token_when_enabled_and_loads_without_discord_py() -> None:
    with pytest.raises(ValueError, match="token is required"):
        DiscordConfig(enabled=True)
    assert DiscordConfig().enabled is False
    code = ("import sys, operator_use.config, operator_use.channels.discord.channel; "
            "assert 'discord' not in sys.modules, 'discord.py imported before connect()'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_builds_the_channel_from_the_config(home: Path) -> None:
    from operator_use.channels.registry import build_channels
    from operator_use.config import load_config

    config = load_config(channels={"cli": {"enabled": False}, "web": {"enabled": False},
                                   "discord": {"enabled": True, "token": TOKEN, "allow_roles": [ROLE_ID]}})
    [channel] = build_channels(config)
    assert channel.name == "discord" and channel.capabilities.max_length == 2000
    assert channel.capabilities.formatting == "discord" and channel.capabilities.voice
    assert channel.inbox == config.workspace / "inbox"
    assert TOKEN not in str(config.masked())
