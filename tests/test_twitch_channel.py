"""The Twitch channel end to end: real twitchio against a fake Twitch on 127.0.0.1, the real pipeline
(orchestrator, agent, gateway) and the real OpenAI SDK against the fake LLM server."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from operator_use.channels.base import ChannelError, Refused, TooLong
from operator_use.channels.twitch import TwitchConfig
from operator_use.channels.twitch.channel import TwitchChannel
from operator_use.channels.twitch.limits import DAY, WhisperRecipients
from operator_use.config import ConfigError, load_config
from operator_use.messages import Address
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer, Reply, echo_responder
from .fakes.twitch_server import CLIENT_ID, CLIENT_SECRET, FakeTwitchServer
from .support.deps import require_module
from .support.pipeline import make_app

pytestmark = pytest.mark.timeout(60)

SECRETS = ("bot-access-token", "bot-refresh-token", CLIENT_SECRET)


@pytest.fixture
async def server() -> AsyncIterator[FakeTwitchServer]:
    require_module("twitchio")
    async with FakeTwitchServer() as srv:
        for login in ("streamer", "alice", "bob", "mallory", "modbob"):
            srv.add_user(login)
        yield srv


def config(server: FakeTwitchServer, **kw) -> TwitchConfig:  # type: ignore[no-untyped-def]
    settings = {
        "enabled": True,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "access_token": SECRETS[0],
        "refresh_token": SECRETS[1],
        "channels": ["streamer"],
        "allow_names": ["alice", "@Bob"],
        "api_url": server.helix_url,
        "id_url": server.id_url,
        "eventsub_url": server.ws_url,
        "edit_interval": 0.0,
    }
    return TwitchConfig(**{**settings, **kw})


def llm(fake: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=fake.openai_base_url)


def sentences(total: int) -> str:
    out: list[str] = []
    while sum(len(s) + 1 for s in out) < total:
        n = len(out) + 1
        out.append(f"Sentence {n} tells part {n} of a story that goes on for a while{'!' if n % 5 == 0 else '.'}")
    return " ".join(out)


def said(server: FakeTwitchServer, reply_to: str | None = None) -> str:
    """Everything the bot posted (in reply to `reply_to`, if given), as one text."""
    return " ".join(p.text for p in server.sent_posts() if reply_to is None or p.reply_to == reply_to)


async def test_mention_gets_an_answer_cut_at_sentences_and_threaded_to_the_question(home: Path, server) -> None:
    answer = sentences(1300)
    async with FakeLLMServer([Reply(text=answer, chunk_size=16)]) as fake:
        channel = TwitchChannel(config(server))
        async with make_app(home, channel, llm(fake)):
            question = await server.chat("streamer", "alice", "@opbot tell me a story", mention="opbot")
            await server.wait_for(lambda: said(server) == answer)
            assert channel.status() == "up"
        posts = server.sent_posts()
        assert len(posts) >= 3
        assert all(len(p.text) <= 500 and p.text[-1] in ".!" for p in posts)  # cut at sentence ends
        assert all(p.reply_to == question for p in posts)  # every part answers the question
        streamer = server.user("streamer")
        assert {(p.body["broadcaster_id"], p.body["sender_id"]) for p in posts} == {(streamer.id, server.bot.id)}
        assert fake.requests[0]["messages"][-1]["content"] == "tell me a story"  # the mention is not the question
        assert len(fake.requests) == 1  # the bot's own messages, echoed back by Twitch, were not questions


async def test_a_2000_character_answer_keeps_the_send_rate_and_loses_nothing(home: Path, server) -> None:
    answer = sentences(2000)
    async with FakeLLMServer([Reply(text=answer, chunk_size=50)]) as fake:
        channel = TwitchChannel(config(server, rate_messages=2, rate_window=1.0))  # rate_margin: 1 s by default
        async with make_app(home, channel, llm(fake)):
            await server.chat("streamer", "alice", "!ai the long version please")
            await server.wait_for(lambda: said(server) == answer)
    times = [p.at for p in server.sent_posts()]
    assert len(times) >= 5 and all(len(p.text) <= 500 for p in server.sent_posts())
    # As Twitch counts (arrival times): any two messages two apart are more than the window (1 s) apart,
    # with at least half a second to spare for network jitter.
    assert all(b - a >= 1.0 + 0.5 for a, b in zip(times, times[2:], strict=False))
    assert times[-1] - times[0] >= (math.ceil(len(times) / 2) - 1) * 1.5
    assert [p.status for p in server.chat_posts] == [200] * len(times)  # nothing rejected, nothing dropped


async def test_messages_without_mention_or_prefix_are_ignored(home: Path, server) -> None:
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(config(server))
        async with make_app(home, channel, llm(fake)):
            await server.chat("streamer", "alice", "just chatting, nothing for the bot")
            await server.chat("streamer", "alice", "@streamer nice stream", mention="streamer")
            await server.chat("streamer", "alice", "!aiming is hard")  # the prefix is a word of its own
            asked = await server.chat("streamer", "alice", "!ai ping")
            await server.wait_for(lambda: said(server, asked) == "You said: ping")
        assert [r["messages"][-1]["content"] for r in fake.requests] == ["ping"]
        assert len(server.sent_posts()) == 1


async def test_session_reconnect_keeps_the_conversation_without_subscribing_again(home: Path, server) -> None:
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(config(server))
        async with make_app(home, channel, llm(fake)) as app:
            first = await server.chat("streamer", "alice", "!ai first")
            await server.wait_for(lambda: said(server, first) == "You said: first")
            old = await server.session_reconnect()
            # twitchio connects to reconnect_url, is welcomed, then closes the old connection.
            await server.wait_for(lambda: len(server.connections) == 2 and old.ws.closed)
            second = await server.chat("streamer", "alice", "!ai second")
            await server.wait_for(lambda: said(server, second) == "You said: second")
            assert channel.status() == "up"
            history = [m.content for m in (await app.sessions.load(f"twitch:{server.user('streamer').id}")).messages]
            assert history == ["first", "You said: first", "second", "You said: second"]
        # One subscription ever: the session carried it over; none was attempted twice.
        assert len(server.subscription_requests) == 1 and server.duplicate_subscriptions == 0
        # The connection twitchio moved to is closed at shutdown too.
        await server.wait_for(lambda: not server.live())


async def test_a_dropped_socket_reconnects_and_subscribes_once_on_the_new_session(home: Path, server) -> None:
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(config(server))
        async with make_app(home, channel, llm(fake)):
            dropped = await server.drop()
            await server.wait_for(
                lambda: len(server.subscriptions) == 1 and server.subscriptions[0].session_id != dropped.session_id
            )
            asked = await server.chat("streamer", "alice", "!ai still there?")
            await server.wait_for(lambda: said(server, asked) == "You said: still there?")
            assert channel.status() == "up"
        sessions = [r["transport"]["session_id"] for r in server.subscription_requests]
        assert len(sessions) == 2 and len(set(sessions)) == 2 and server.duplicate_subscriptions == 0
        await server.wait_for(lambda: not server.live())


async def test_a_429_is_retried_after_ratelimit_reset(home: Path, server) -> None:
    # Reset in 2-3 s: a retry after a default second instead of the header's time would come too early.
    server.chat_failures.append((429, 2.0))
    async with FakeLLMServer([Reply(text="Worth the wait.")]) as fake:
        channel = TwitchChannel(config(server))
        async with make_app(home, channel, llm(fake)):
            asked = await server.chat("streamer", "alice", "!ai hello")
            await server.wait_for(lambda: said(server, asked) == "Worth the wait.")
    refused, accepted = server.chat_posts
    assert refused.status == 429 and accepted.status == 200
    assert refused.reset is not None and accepted.wall >= refused.reset - 0.01  # not before the reset time
    assert accepted.reply_to == asked


async def test_a_dropped_chunk_leaves_the_others_and_the_user_is_told(home: Path, server) -> None:
    answer = sentences(1300).replace("Sentence 9 tells", "Sentence 9 (the forbidden one) tells")
    server.drop_when(lambda text: "forbidden" in text)  # AutoMod: taken, answered is_sent false, not posted
    async with FakeLLMServer([Reply(text=answer, chunk_size=40)]) as fake:
        channel = TwitchChannel(config(server))
        async with make_app(home, channel, llm(fake)):
            question = await server.chat("streamer", "alice", "!ai tell me a story")
            await server.wait_for(lambda: "could not be delivered" in said(server))
    dropped = [p for p in server.chat_posts if p.drop_code is not None]
    assert len(dropped) == 1 and "forbidden" in dropped[0].text
    posts = server.sent_posts()
    *parts, notice = [p.text for p in posts]
    # Every other chunk arrived; with the dropped one back in its place, the whole answer is there.
    index = server.chat_posts.index(dropped[0])
    everything = [p.text for p in server.chat_posts[: index + 1] if p.status == 200] + parts[index:]
    assert " ".join(everything) == answer
    assert notice == (
        f"({len(dropped[0].text)} characters could not be delivered: Your message wasn't posted "
        "due to conflicts with the channel's moderation settings.)"
    )
    assert all(p.reply_to == question for p in posts)


async def test_a_duplicate_message_is_sent_again_marked(home: Path, server) -> None:
    async with FakeLLMServer([Reply(text="Same answer."), Reply(text="Same answer.")]) as fake:
        channel = TwitchChannel(config(server))
        async with make_app(home, channel, llm(fake)):
            await server.chat("streamer", "alice", "!ai first question")
            await server.wait_for(lambda: len(server.sent_posts()) == 1)
            await server.chat("streamer", "alice", "!ai second question")
            await server.wait_for(lambda: len(server.sent_posts()) == 2)
    assert [p.drop_code for p in server.chat_posts] == [None, "msg_duplicate", None]
    # Twitch shows the tag character as nothing: the same words, a message Twitch takes as new.
    assert [p.text for p in server.sent_posts()] == ["Same answer.", "Same answer. \U000e0000"]


async def test_a_duplicate_with_no_room_for_the_marker_is_cut_smaller_and_arrives_whole(home: Path, server) -> None:
    text = ("x" * 9 + " ") * 49 + "y" * 10
    assert len(text) == 500  # " \U000e0000" would make it 502
    async with FakeLLMServer([Reply(text=text), Reply(text=text)]) as fake:
        async with make_app(home, TwitchChannel(config(server)), llm(fake)):
            await server.chat("streamer", "alice", "!ai first question")
            await server.wait_for(lambda: len(server.sent_posts()) == 1)
            second = await server.chat("streamer", "alice", "!ai second question")
            await server.wait_for(
                lambda: (
                    said(server, second).replace(" \U000e0000", "") == text or "could not be delivered" in said(server)
                )
            )
    assert [p.drop_code for p in server.chat_posts].count("msg_duplicate") == 1
    again = [p.text for p in server.sent_posts() if p.reply_to == second]
    assert len(again) >= 2 and all(len(t) <= 500 for t in again)  # cut, so each part differs from the first
    assert " ".join(again).replace(" \U000e0000", "") == text


async def test_helix_refusals_reach_the_gateway_as_its_own_errors(server) -> None:
    channel = TwitchChannel(config(server))
    await channel.start(_ignore)
    try:
        here = Address(channel="twitch", chat_id=server.user("streamer").id)
        with pytest.raises(TooLong):  # over 500 characters
            await channel.send(here, "x" * 501)
        server.max_message = 100  # as if Twitch counted more than we do: its 400 for an over-long message
        with pytest.raises(TooLong):
            await channel.send(here, "x" * 101)
        server.max_message = 500
        server.drop_when(lambda text: "spam" in text, "msg_rejected", "held by AutoMod")
        with pytest.raises(Refused) as held:
            await channel.send(here, "some spam")
        assert held.value.reason == "held by AutoMod" and held.value.resend is None
        await channel.send(here, "twice")
        with pytest.raises(Refused) as duplicate:
            await channel.send(here, "twice")
        assert duplicate.value.resend == "twice \U000e0000"
        await channel.send(here, duplicate.value.resend)
        await channel.send(here, "z" * 499)
        with pytest.raises(TooLong):  # repeated, with no room left for the marker: to be cut smaller
            await channel.send(here, "z" * 499)
    finally:
        await channel.stop()
    assert [p.text for p in server.sent_posts()] == ["twice", "twice \U000e0000", "z" * 499]


async def test_an_unknown_user_is_refused(home: Path, server) -> None:
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(config(server, rejection_message="Sorry, I only answer my owners."))
        async with make_app(home, channel, llm(fake)):
            intruder = await server.chat("streamer", "mallory", "@opbot do my homework", mention="opbot")
            await server.wait_for(lambda: said(server, intruder) == "Sorry, I only answer my owners.")
            asked = await server.chat("streamer", "alice", "!ai hi")
            await server.wait_for(lambda: said(server, asked) == "You said: hi")
        assert [r["messages"][-1]["content"] for r in fake.requests] == ["hi"]


async def test_moderators_may_talk_when_allowed_and_users_by_id(home: Path, server) -> None:
    carol = server.add_user("carol")
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(config(server, allow_moderators=True, allow_from=[carol.id]))
        async with make_app(home, channel, llm(fake)):
            await server.chat("streamer", "mallory", "!ai not a moderator")
            mod = await server.chat("streamer", "modbob", "!ai moderator here", badges=["moderator"])
            by_id = await server.chat("streamer", "carol", "!ai allowed by id")
            await server.wait_for(lambda: said(server, mod) and said(server, by_id))
        assert sorted(r["messages"][-1]["content"] for r in fake.requests) == ["allowed by id", "moderator here"]


async def test_a_login_that_reads_like_an_allowed_id_gets_nothing_of_that_id(home: Path, server) -> None:
    alice = server.user("alice")
    impostor = server.add_user(alice.id)  # Twitch logins may be all digits: this one reads like Alice's id
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(
            config(
                server,
                allow_names=[],
                allow_from=[alice.id],
                admins=[alice.id],
                allow_moderators=True,
                rejection_message="no",
            )
        )
        async with make_app(home, channel, llm(fake)):
            intruder = await server.chat("streamer", impostor.login, "!ai let me in")
            await server.wait_for(lambda: bool(said(server, intruder)))
            assert said(server, intruder) == "no"
            # Let in as a moderator, the name still makes him no admin.
            restart = await server.chat("streamer", impostor.login, "!ai /restart", badges=["moderator"])
            await server.wait_for(lambda: bool(said(server, restart)))
            assert said(server, restart) == "/restart is for admins only."
            asked = await server.chat("streamer", "alice", "!ai hi")
            await server.wait_for(lambda: said(server, asked) == "You said: hi")
        assert [r["messages"][-1]["content"] for r in fake.requests] == ["hi"]


async def test_per_user_sessions_and_whispers(home: Path, server) -> None:
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(config(server, per_user_sessions=True, whispers=True))
        async with make_app(home, channel, llm(fake)) as app:
            a = await server.chat("streamer", "alice", "!ai from alice")
            b = await server.chat("streamer", "bob", "!ai from bob")
            await server.wait_for(lambda: said(server, a) and said(server, b))
            await server.whisper("alice", "a secret question")
            await server.wait_for(lambda: len(server.whispers) == 1)
            streamer, alice, bob = (server.user(n) for n in ("streamer", "alice", "bob"))
            for user, text in ((alice, "from alice"), (bob, "from bob")):
                session = await app.sessions.load(f"twitch:{streamer.id}:{user.id}")
                assert [m.content for m in session.messages] == [text, f"You said: {text}"]
        assert server.whispers == [{"to": alice.id, "message": "You said: a secret question"}]


async def test_whispers_go_to_at_most_40_people_a_day(server) -> None:
    channel = TwitchChannel(config(server, whispers=True))
    await channel.start(_ignore)
    try:
        people = [server.add_user(f"viewer{i}").id for i in range(41)]
        for person in people[:40]:
            await channel.send(Address(channel="twitch", chat_id=f"@{person}"), "hello")
        with pytest.raises(ChannelError) as refused:  # Helix Send Whisper: 40 unique recipients per day
            await channel.send(Address(channel="twitch", chat_id=f"@{people[40]}"), "hello")
        assert refused.value.permanent and "40 people" in str(refused.value)
        await channel.send(Address(channel="twitch", chat_id=f"@{people[0]}"), "again")  # not a new recipient
    finally:
        await channel.stop()
    assert [w["to"] for w in server.whispers] == [*people[:40], people[0]]


def test_the_whisper_recipient_count_is_the_last_day_by_the_last_whisper() -> None:
    now = [0.0]
    recipients = WhisperRecipients(2, clock=lambda: now[0])
    assert recipients.admit("a") and recipients.admit("b") and not recipients.admit("c")
    now[0] = 3600.0
    assert recipients.admit("a")  # a again: counted from now on
    now[0] = DAY
    assert recipients.admit("c")  # b's day is over, not a's
    assert not recipients.admit("b")


async def test_answers_in_two_channels_share_the_accounts_send_rate(home: Path, server) -> None:
    server.add_user("otherstreamer")
    answers = [Reply(text=f"Answer number {i}.") for i in range(6)]
    async with FakeLLMServer(answers) as fake:
        channel = TwitchChannel(
            config(server, channels=["streamer", "otherstreamer"], rate_messages=2, rate_window=1.0)
        )  # rate_margin: 1 s by default
        async with make_app(home, channel, llm(fake), max_concurrent_turns=6):
            for i in range(3):
                await server.chat("streamer", "alice", f"!ai question {i}")
                await server.chat("otherstreamer", "bob", f"!ai question {i}")
            await server.wait_for(lambda: len(server.sent_posts()) == 6, timeout=30)
    posts = server.sent_posts()
    assert {p.body["broadcaster_id"] for p in posts} == {server.user("streamer").id, server.user("otherstreamer").id}
    times = [p.at for p in posts]
    # As Twitch counts, for the account: never more than 2 messages within the 1 s window, wherever they went,
    # with at least half a second to spare for network jitter.
    assert all(b - a >= 1.0 + 0.5 for a, b in zip(times, times[2:], strict=False))


async def test_no_token_file_and_no_oauth_server_unless_asked(
    home: Path, server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    port_4343_before = _listening(4343)
    channel = TwitchChannel(config(server))
    await channel.start(_ignore)
    assert _listening(4343) == port_4343_before  # twitchio's OAuth adapter did not start
    await channel.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    channel = TwitchChannel(config(server, oauth_port=free))
    await channel.start(_ignore)
    assert _listening(free)  # only when configured
    await channel.stop()
    assert not _listening(free)
    assert list(cwd.iterdir()) == []  # no .tio.tokens.json


async def test_expired_tokens_are_refreshed_in_memory(
    home: Path, server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with FakeLLMServer(responder=echo_responder()) as fake:
        channel = TwitchChannel(config(server, access_token="expired-at-start"))  # refreshed on connect
        async with make_app(home, channel, llm(fake)):
            server.bot.token = "revoked-while-running"  # the next send gets a 401 and refreshes again
            asked = await server.chat("streamer", "alice", "!ai still allowed?")
            await server.wait_for(lambda: said(server, asked) == "You said: still allowed?")
    assert [p.status for p in server.chat_posts] == [401, 200]
    assert ("POST", "/oauth2/token") in server.requests and not (tmp_path / ".tio.tokens.json").exists()


async def test_refused_tokens_fail_clearly_without_leaking_secrets(server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    channel = TwitchChannel(config(server, access_token="expired-token", refresh_token="stale-refresh"))
    with pytest.raises(ChannelError) as info:
        await channel.start(_ignore)
    assert "HTTP 400" in str(info.value)
    everything = caplog.text + str(info.value)
    assert not any(secret in everything for secret in ("expired-token", "stale-refresh", CLIENT_SECRET))
    assert channel.status() == "down"


def test_config_requires_credentials_once_enabled(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"channels.twitch"):
        load_config(channels={"twitch": {"enabled": True, "channels": ["streamer"]}})
    loaded = load_config(channels={"twitch": {"enabled": True, "client_id": "x", "access_token": "secret-token"}})
    assert "secret-token" not in str(loaded.masked())


async def _ignore(message) -> None:  # type: ignore[no-untyped-def]
    return None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
