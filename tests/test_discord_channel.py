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

from operator_use.channels.base import ChannelError, Refused, RetryAfter, TooLong
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
    user,
)
from .fakes.llm_server import FakeLLMServer, Reply
from .support.deps import require_module
from .support.pipeline import Gates, make_app, scripted_responder
from .support.speech import spoken_ogg
from .test_pairing_users import cli

TOKEN = "fake-discord-bot-token-SECRET"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    require_module("discord")
    async with FakeDiscord(token=TOKEN) as server:
        yield server


def observed_channel(home: Path, fake: FakeDiscord, **config: object):  # type: ignore[no-untyped-def]
    """The real DiscordChannel on the fake's endpoints (the gateway found at /gateway/bot), also telling
    the test when a message is finalized."""
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

    settings: dict[str, object] = {
        "enabled": True,
        "token": TOKEN,
        "allow_from": ["11"],
        "edit_interval": 0.05,
        "api_base_url": fake.api_base,
    }
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


async def test_dm_reply_is_streamed_into_one_message_edited_in_place(
    home: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = "Streaming into Discord works: " + " ".join(f"word{i}" for i in range(60)) + "."
    async with FakeLLMServer([Reply(text=answer, chunk_size=12, delay_per_chunk=0.01)]) as server:
        channel = observed_channel(home, fake)
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
            # Only api_base_url is configured: the gateway URL was asked of that server.
            assert ("GET", "/gateway/bot") in fake.requests and fake.connections == ["/gateway"]
    assert TOKEN not in caplog.text


async def test_unknown_user_is_refused(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake, rejection_message="Sorry, I only talk to my owner.")
        async with make_app(home, channel, llm(server)):
            await fake.user_message(DM_CHANNEL_ID, "let me in", author=BOB)
            await fake.user_message(CHANNEL_ID, "me too", author=BOB, guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 2)
            assert [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)] == ["Sorry, I only talk to my owner."]
            assert [m["content"] for m in fake.in_channel(CHANNEL_ID)] == ["Sorry, I only talk to my owner."]
            assert server.requests == []  # the model never saw them


async def test_allow_lists_match_user_ids_and_names_only_in_their_own_fields(home: Path, fake: FakeDiscord) -> None:
    mallory = user("66", ALICE["id"])  # she picked the username "11": Alice's user id
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(
            home, fake, admins=[ALICE["id"]], allow_names=["@Carol"], allow_guilds=[GUILD_ID], rejection_message="no"
        )
        assert channel.discord_config.allow_from == [ALICE["id"]]
        async with make_app(home, channel, llm(server)):
            await fake.user_message(DM_CHANNEL_ID, "let me in", author=mallory)
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(DM_CHANNEL_ID)[-1]["content"] == "no"
            # Let in by the guild, her name still makes her no admin.
            await fake.user_message(CHANNEL_ID, "/restart", author=mallory, guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 2)
            assert fake.in_channel(CHANNEL_ID)[-1]["content"] == "/restart is for admins only."
            # The id itself is allowed and admin: /help lists the admin commands to Alice.
            await fake.user_message(DM_CHANNEL_ID, "/help", author=ALICE)
            await channel.wait_finalized(lambda f: len(f) == 3)
            assert "/restart" in fake.in_channel(DM_CHANNEL_ID)[-1]["content"]
            # A name in allow_names lets its holder in ("@" and case do not matter), without admin rights.
            await fake.user_message(DM_CHANNEL_ID, "carol here", author=CAROL)
            await channel.wait_finalized(lambda f: len(f) == 4)
            assert fake.in_channel(DM_CHANNEL_ID)[-1]["content"] == "You said: carol here"
            await fake.user_message(DM_CHANNEL_ID, "/help", author=CAROL)
            await channel.wait_finalized(lambda f: len(f) == 5)
            assert "/restart" not in fake.in_channel(DM_CHANNEL_ID)[-1]["content"]
            assert user_texts(server) == ["carol here"] and len(server.requests) == 1


async def test_endpoints_come_from_this_clients_config(home: Path, fake: FakeDiscord) -> None:
    import discord.gateway
    import discord.http

    official_api, default_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake, gateway_url=f"ws://127.0.0.1:{fake.port}/other-gateway")
        async with make_app(home, channel, llm(server)):
            await fake.user_message(DM_CHANNEL_ID, "through a proxy")
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(DM_CHANNEL_ID)[-1]["content"] == "You said: through a proxy"
            assert fake.connections == ["/other-gateway"]  # the configured gateway, not a discovered one
            assert ("GET", "/gateway/bot") not in fake.requests
            # discord.py's process-wide defaults are untouched: any other client still talks to Discord.
            assert discord.http.Route.BASE == official_api == "https://discord.com/api/v10"
            assert default_gateway == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def test_endpoint_settings_are_checked() -> None:
    config = DiscordConfig(api_base_url="https://proxy.example/api/v10/", gateway_url="wss://proxy.example/gw")
    assert config.api_base_url == "https://proxy.example/api/v10"  # discord.py's paths bring their own "/"
    with pytest.raises(ValueError, match="api_base_url must be an http"):
        DiscordConfig(api_base_url="proxy.example/api/v10")
    with pytest.raises(ValueError, match="gateway_url must be a ws"):
        DiscordConfig(gateway_url="https://gateway.discord.gg")


async def test_allowlist_by_role_and_by_guild(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake, allow_roles=[ROLE_ID], rejection_message="no")
        async with make_app(home, channel, llm(server)):
            # Carol is not in allow_from but holds the role: allowed in the guild...
            await fake.user_message(
                CHANNEL_ID, "role check", author=CAROL, guild_id=GUILD_ID, roles=[ROLE_ID], mention_bot=True
            )
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(CHANNEL_ID)[-1]["content"] == "You said: role check"
            # ...but in a direct message there is no role to go by.
            await fake.user_message(DM_CHANNEL_ID, "dm check", author=CAROL)
            await channel.wait_finalized(lambda f: len(f) == 2)
            assert fake.in_channel(DM_CHANNEL_ID)[-1]["content"] == "no"
            assert len(server.requests) == 1

    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake, allow_guilds=[GUILD_ID])
        async with make_app(home, channel, llm(server)):
            await fake.user_message(CHANNEL_ID, "guild check", author=BOB, guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(CHANNEL_ID)[-1]["content"] == "You said: guild check"


# --- guild channels and threads ------------------------------------------------------------------


async def test_guild_message_needs_a_mention_or_a_reply(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake)
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
        channel = observed_channel(home, fake, reply_overrides={CHANNEL_ID: "all", THREAD_ID: "never"})
        async with make_app(home, channel, llm(server)):
            await fake.user_message(THREAD_ID, "ignored even when mentioned", guild_id=GUILD_ID, mention_bot=True)
            await fake.user_message(CHANNEL_ID, "no mention needed here", guild_id=GUILD_ID)
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert user_texts(server) == ["no mention needed here"]
            assert fake.in_channel(THREAD_ID) == []


async def test_a_thread_keeps_its_own_history(home: Path, fake: FakeDiscord) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake)
        async with make_app(home, channel, llm(server)) as app:
            await fake.user_message(CHANNEL_ID, "remember apples", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 1)
            await fake.user_message(THREAD_ID, "what about pears", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 2)
            await fake.user_message(THREAD_ID, "and plums", guild_id=GUILD_ID, mention_bot=True)
            await channel.wait_finalized(lambda f: len(f) == 3)
            # Replies went into the thread (a thread is a channel on Discord)...
            assert [m["content"] for m in fake.in_channel(THREAD_ID)] == [
                "You said: what about pears",
                "You said: and plums",
            ]
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
        channel = observed_channel(home, fake)
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
        channel = observed_channel(home, fake)
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
        channel = observed_channel(home, fake)
        async with make_app(home, channel, llm(server)):
            await fake.user_message(
                DM_CHANNEL_ID,
                "look at these",
                attachments=[
                    fake.attachment("cat.png", png, "image/png"),
                    fake.attachment("../../report.pdf", pdf, "application/pdf"),
                ],
            )
            await channel.wait_finalized(lambda f: len(f) == 1)
            content = server.requests[0]["messages"][-1]["content"]
            assert any(b["type"] == "image_url" for b in content)
            [saved] = list((home / "workspace" / "inbox").iterdir())
            assert saved.read_bytes() == pdf and saved.name.endswith("report.pdf")
            text = " ".join(b.get("text", "") for b in content if b["type"] == "text")
            assert "look at these" in text and str(saved) in text


async def test_an_unknown_senders_attachments_are_never_fetched(home: Path, fake: FakeDiscord) -> None:
    inbox = home / "workspace" / "inbox"
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake, allow_roles=[ROLE_ID], rejection_message="no")
        async with make_app(home, channel, llm(server)):
            await fake.user_message(
                DM_CHANNEL_ID,
                "",
                author=BOB,
                voice=True,
                attachments=[
                    fake.attachment("cat.png", b"\x89PNG\r\n\x1a\n", "image/png"),
                    fake.attachment("junk.bin", b"x" * 4096, "application/octet-stream"),
                    fake.attachment("voice-message.ogg", b"OggS" + bytes(64), "audio/ogg", voice=True),
                ],
            )
            # Attachments only, none fetched: the message still reached the orchestrator, which refused it.
            await channel.wait_finalized(lambda f: len(f) == 1)
            assert fake.in_channel(DM_CHANNEL_ID)[-1]["content"] == "no"
            assert fake.downloads == [] and not inbox.exists()
            # Registered as a user from the CLI (another process): his next file is fetched.
            rc, _ = await cli(home, "user", "add", "bob", "discord", BOB["id"])
            assert rc == 0
            await fake.user_message(
                DM_CHANNEL_ID,
                "from bob",
                author=BOB,
                attachments=[fake.attachment("bob.pdf", b"%PDF bob", "application/pdf")],
            )
            await channel.wait_finalized(lambda f: len(f) == 2)
            # Allowed through a role (a platform group): fetched as well.
            await fake.user_message(
                CHANNEL_ID,
                "from carol",
                author=CAROL,
                guild_id=GUILD_ID,
                roles=[ROLE_ID],
                mention_bot=True,
                attachments=[fake.attachment("carol.pdf", b"%PDF carol", "application/pdf")],
            )
            await channel.wait_finalized(lambda f: len(f) == 3)
            assert fake.downloads == ["bob.pdf", "carol.pdf"]
            assert sorted(p.read_bytes() for p in inbox.iterdir()) == [b"%PDF bob", b"%PDF carol"]
            assert len(server.requests) == 2 and "bob.pdf" in user_texts(server, 0)[-1]


# --- length, rate limits, reconnects -------------------------------------------------------------


def long_answer() -> str:
    prose = " ".join(f"Sentence number {i} explains a little more." for i in range(38))  # ~1,600 chars
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})  # step {i}" for i in range(30)) + "\n```"
    tail = " ".join(f"Closing remark {i} wraps it up." for i in range(30))
    text = f"{prose}\n\n{code}\n\n{tail}"
    assert 3300 <= len(text) <= 3700, len(text)
    return text


async def test_a_3500_character_answer_becomes_two_messages_without_breaking_the_code_block(
    home: Path, fake: FakeDiscord
) -> None:
    answer = long_answer()
    async with FakeLLMServer([Reply(text=answer, chunk_size=150, delay_per_chunk=0.005)]) as server:
        channel = observed_channel(home, fake)
        async with make_app(home, channel, llm(server)):
            await fake.user_message(DM_CHANNEL_ID, "explain at length")
            await channel.wait_finalized(lambda f: len(f) == 2)
            first, second = fake.in_channel(DM_CHANNEL_ID)
            assert len(first["content"]) <= 2000 and len(second["content"]) <= 2000
            assert balanced(first["content"]) and balanced(second["content"])
            block = answer[answer.index("```python") : answer.index("```", answer.index("```python") + 3) + 3]
            assert block in first["content"] or block in second["content"]
            assert " ".join((first["content"] + " " + second["content"]).split()) == " ".join(answer.split())
            assert channel.finalized == [first["id"], second["id"]]
            assert "message_reference" not in second  # only the first part replies to the question


async def test_long_reply_continues_in_a_thread_when_configured(home: Path, fake: FakeDiscord) -> None:
    answer = long_answer()
    async with FakeLLMServer([Reply(text=answer, chunk_size=150, delay_per_chunk=0.005)]) as server:
        channel = observed_channel(home, fake, thread_long_replies=True)
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
    return [
        Reply(text=before, chunk_size=16, tool_calls=[{"name": "gate", "arguments": {"name": "g"}}]),
        Reply(text=after, chunk_size=16),
    ]


@pytest.mark.parametrize("via", [True, False], ids=["library-retries", "library-gives-up"])
async def test_a_429_on_edit_loses_nothing(home: Path, fake: FakeDiscord, via: bool) -> None:
    before = "Rate limits must not eat text: " + " ".join(f"piece{i}" for i in range(20)) + "."
    after = "And the rest: " + " ".join(f"more{i}" for i in range(30)) + "."
    gates = Gates()
    async with FakeLLMServer(paused_reply(before, after)) as server:
        channel = observed_channel(home, fake)
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


def whole(text: str) -> str:
    return " ".join(text.split())


async def test_content_over_the_limit_is_cut_smaller_and_the_reply_arrives_whole(home: Path, fake: FakeDiscord) -> None:
    answer = long_answer()
    fake.max_content = 1500  # as if Discord counted more than the 2,000 the channel declares: it answers 50035
    async with FakeLLMServer([Reply(text=answer, chunk_size=150, delay_per_chunk=0.005)]) as server:
        channel = observed_channel(home, fake)
        async with make_app(home, channel, llm(server)) as app:
            await fake.user_message(DM_CHANNEL_ID, "explain at length")
            await fake.wait_for(
                lambda: whole(" ".join(m["content"] for m in fake.in_channel(DM_CHANNEL_ID))) == whole(answer)
            )
            stats = app.gateway.editor.stats
    messages = [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)]
    assert fake.too_long and stats.too_long == len(fake.too_long)  # refused, then cut smaller: nothing lost
    assert len(messages) >= 3 and all(len(m) <= 1500 and balanced(m) for m in messages)
    assert stats.undelivered_chars == 0 and stats.errors == 0
    assert not any("could not be delivered" in m for m in messages)


async def test_a_chunk_automod_blocks_is_skipped_the_rest_arrives_and_the_user_is_told(
    home: Path, fake: FakeDiscord
) -> None:
    harmless = " ".join(f"Harmless sentence {i}." for i in range(20))
    blocked = "Then comes a forbidden remark, and more words that AutoMod takes down with it."
    after = "After the tool call: " + " ".join(f"more{i}" for i in range(30)) + "."
    fake.block_when(lambda content: "forbidden" in content)  # as a server's AutoMod keyword rule does
    gates = Gates()
    # Three parts, a tool call (a gate the test opens) between each: shown, then blocked, then the rest.
    reply = [
        Reply(text=harmless, chunk_size=16, tool_calls=[{"name": "gate", "arguments": {"name": "a"}}]),
        # In one piece: no edit can show the start of the blocked words before the rest arrives.
        Reply(text=blocked, chunk_size=len(blocked), tool_calls=[{"name": "gate", "arguments": {"name": "b"}}]),
        Reply(text=after, chunk_size=16),
    ]
    async with FakeLLMServer(reply) as server:
        channel = observed_channel(home, fake)
        async with make_app(home, channel, llm(server), tools=[gates.tool()]) as app:
            asked = await fake.user_message(DM_CHANNEL_ID, "go")
            await gates.wait_entered("a")
            await fake.wait_for(lambda: [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)] == [harmless])
            gates.release["a"].set()
            await gates.wait_entered("b")
            # The edit that adds it is refused (the message keeps what it shows), then it is refused as a
            # message of its own: skipped.
            await fake.wait_for(lambda: [b.method for b in fake.blocked] == ["PATCH", "POST"])
            gates.release["b"].set()
            await fake.wait_for(
                lambda: any("could not be delivered" in m["content"] for m in fake.in_channel(DM_CHANNEL_ID))
            )
            stats = app.gateway.editor.stats
    messages = fake.in_channel(DM_CHANNEL_ID)
    assert [m["content"] for m in messages[:2]] == [harmless, after]
    skipped = fake.blocked[1].content
    assert whole(skipped) == blocked
    assert messages[2]["content"] == (
        f"({len(skipped)} characters could not be delivered: blocked by the server's AutoMod)"
    )
    assert len(messages) == 3 and stats.undelivered_chars == len(skipped) and stats.errors == 0
    assert messages[0]["message_reference"]["message_id"] == asked["id"]


async def test_refusals_reach_the_gateway_as_its_own_errors(home: Path, fake: FakeDiscord) -> None:
    channel = observed_channel(home, fake)
    await channel.start(lambda message: asyncio.sleep(0))
    try:
        here = Address(channel="discord", chat_id=DM_CHANNEL_ID)
        with pytest.raises(TooLong):
            await channel.send(here, "x" * 2001)
        mid = await channel.send(here, "short")
        with pytest.raises(TooLong):
            await channel.edit(here, mid, "😀" * 2001)  # code points, not UTF-16 units: 2,001 is over
        await channel.edit(here, mid, "😀" * 2000)
        fake.block_when(lambda content: "spam" in content)
        with pytest.raises(Refused) as blocked:
            await channel.send(here, "some spam")
        assert blocked.value.reason == "blocked by the server's AutoMod" and blocked.value.resend is None
        with pytest.raises(Refused):
            await channel.edit(here, mid, "now spam")
        # What would fail every message alike stays a permanent error, not a refusal of this one.
        theirs = await fake.user_message(DM_CHANNEL_ID, "a user's message")
        with pytest.raises(ChannelError) as forbidden:
            await channel.edit(here, theirs["id"], "not mine to edit")
        assert forbidden.value.permanent and not isinstance(forbidden.value, (Refused, TooLong))
    finally:
        await channel.stop()
    assert [m["content"] for m in fake.in_channel(DM_CHANNEL_ID)] == ["😀" * 2000]


async def test_gateway_reconnect_mid_stream_resumes_and_the_reply_completes(
    home: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = "This reply survives a gateway reconnect: " + " ".join(f"part{i}" for i in range(20)) + "."
    after = "Still here after the reconnect."
    gates = Gates()
    async with FakeLLMServer(paused_reply(before, after), responder=scripted_responder) as server:
        channel = observed_channel(home, fake)
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
    home: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = observed_channel(home, fake)
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


async def test_a_wrong_token_is_refused_without_being_logged(
    home: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    from operator_use.channels.discord.channel import DiscordChannel

    caplog.set_level(logging.DEBUG)
    channel = DiscordChannel(
        DiscordConfig(enabled=True, token="wrong-token-XYZ", api_base_url=fake.api_base), workspace=home / "workspace"
    )
    with pytest.raises(ChannelError) as info:
        await channel.start(lambda message: asyncio.sleep(0))
    assert info.value.permanent and channel.status() == "down"
    assert "wrong-token-XYZ" not in caplog.text and "wrong-token-XYZ" not in str(info.value)
    assert "**********" in repr(channel.discord_config.token)


def test_config_requires_a_token_when_enabled_and_loads_without_discord_py() -> None:
    with pytest.raises(ValueError, match="token is required"):
        DiscordConfig(enabled=True)
    assert DiscordConfig().enabled is False
    code = (
        "import sys, operator_use.config, operator_use.channels.discord.channel; "
        "assert 'discord' not in sys.modules, 'discord.py imported before connect()'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_builds_the_channel_from_the_config(home: Path) -> None:
    from operator_use.channels.registry import build_channels
    from operator_use.config import load_config

    config = load_config(
        channels={
            "cli": {"enabled": False},
            "web": {"enabled": False},
            "discord": {"enabled": True, "token": TOKEN, "allow_roles": [ROLE_ID]},
        }
    )
    [channel] = build_channels(config)
    assert channel.name == "discord" and channel.capabilities.max_length == 2000
    assert channel.capabilities.formatting == "discord" and channel.capabilities.voice
    assert channel.inbox == config.workspace / "inbox"
    assert TOKEN not in str(config.masked())
