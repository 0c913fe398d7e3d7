"""The Slack channel end to end: the real slack-bolt / slack-sdk clients against a fake Slack
(tests/fakes/slack_server.py: Web API + Socket Mode on 127.0.0.1), the real pipeline, a fake LLM."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from operator_use.agent.tools import Tool
from operator_use.app import App
from operator_use.channels.base import ChannelError, Refused, TooLong
from operator_use.channels.slack.channel import SlackChannel
from operator_use.channels.slack.config import SlackConfig
from operator_use.channels.slack.events import EventRouter
from operator_use.config import ConfigError, load_config
from operator_use.messages import Address, AudioPart, OutgoingMessage
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .fakes.slack_server import FakeSlackServer
from .support.deps import require_module
from .support.pipeline import Gates, make_app, scripted_responder
from .support.speech import encode_as, espeak_pcm, need_voice_stack, words
from .test_pairing_users import CODE, cli

ALLOWED = ["U1", "U2"]


@pytest.fixture(autouse=True)
def _slack_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("slack_bolt")
    require_module("slack_sdk")
    # The SDK honours proxy variables; the fake is on loopback.
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)


class ObservedSlack(SlackChannel):
    """The real channel, also recording which messages the gateway finalized (Slack itself needs no call)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.finalized: list[tuple[str, str]] = []
        self._changed = asyncio.Condition()

    async def finalize(self, address: Address, message_id: str) -> None:
        await super().finalize(address, message_id)
        async with self._changed:
            self.finalized.append((address.chat_id, message_id))
            self._changed.notify_all()

    async def wait_finalized(self, count: int, timeout: float = 20.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.finalized) >= count)

        await asyncio.wait_for(check(), timeout)


def slack_config(slack: FakeSlackServer, **overrides: Any) -> SlackConfig:
    settings: dict[str, Any] = {
        "enabled": True,
        "bot_token": slack.bot_token,
        "app_token": slack.app_token,
        "api_base_url": slack.api_base_url,
        "allow_from": ALLOWED,
        "admins": ["U1"],
        "edit_interval": 0.05,
    }
    settings.update(overrides)
    return SlackConfig(**settings)


@asynccontextmanager
async def slack_app(
    home: Path, slack: FakeSlackServer, llm_server: FakeLLMServer, *, tools: list[Tool] | None = None, **config: Any
) -> AsyncIterator[tuple[App, ObservedSlack]]:
    channel = ObservedSlack(slack_config(slack, **config), workspace=home / "workspace")
    llm = OpenAILLM("fake-gpt", "test-key", base_url=llm_server.openai_base_url)
    async with make_app(home, channel, llm, tools=tools) as app:  # type: ignore[arg-type]
        assert app.gateway is not None and app.gateway.status()["slack"] == "up"
        yield app, channel


def user_texts(llm_server: FakeLLMServer) -> list[str]:
    """The last user message of every request the model got."""
    out = []
    for request in llm_server.requests:
        content = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        out.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content))
    return out


async def history(app: App, key: str) -> list[Any]:
    return (await app.sessions.load(key)).messages


# --- acceptance -------------------------------------------------------------------------------


async def test_dm_gets_a_streamed_reply_updated_in_place_and_finalized_once(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = "Here is a **bold** answer that arrives in many small pieces, edited in place as it grows."
    async with (
        FakeSlackServer() as slack,
        FakeLLMServer([Reply(text=answer, chunk_size=4, delay_per_chunk=0.02)]) as llm_server,
    ):
        async with slack_app(home, slack, llm_server) as (app, channel):
            await slack.send_event(slack.message("hi there", user="U1", channel="D1"))
            await channel.wait_finalized(1)
            [reply] = slack.posted
            assert reply.channel == "D1" and reply.thread_ts is None  # DMs are answered top-level
            assert len(reply.updates) >= 2, "the reply was streamed through several chat.update calls"
            assert reply.final_text == answer.replace("**bold**", "*bold*")  # Slack mrkdwn
            assert channel.finalized == [("D1", reply.ts)]
            assert len(slack.calls_to("chat.postMessage")) == 1
            # Every update edited that same message, each with more of the answer (no no-op edits).
            assert all(c.params["ts"] == reply.ts for c in slack.calls_to("chat.update"))
            texts = [reply.text, *reply.updates]
            assert all(len(a) < len(b) for a, b in itertools.pairwise(texts))
            assert user_texts(llm_server) == ["hi there"]
            assert [m.role for m in await history(app, "slack:D1")] == ["human", "ai"]
            # The bot's own posts and edits came back as events and were acknowledged, not answered.
            await slack.wait_for(lambda: all(e.acked for e in slack.envelopes))
            assert len(llm_server.requests) == 1
    assert slack.bot_token not in caplog.text and slack.app_token not in caplog.text


async def test_channel_mention_is_answered_in_its_thread_which_keeps_its_own_history(home: Path) -> None:
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server) as (app, channel):
            first = slack.message("<@UBOT> remember the word apple", user="U1", channel="C1")
            # Slack sends a mention twice: as a channel message and as app_mention.
            await slack.send_event(first)
            await slack.send_event(slack.mention(first))
            await channel.wait_finalized(1)
            thread = first["ts"]
            [reply] = slack.replies("C1", thread)
            assert reply.final_text == "You said: remember the word apple"

            # In the bot's thread no mention is needed; the thread's history goes with it.
            await slack.send_event(slack.message("which word was it?", user="U2", channel="C1", thread_ts=thread))
            await channel.wait_finalized(2)
            assert [p.final_text for p in slack.replies("C1", thread)][-1] == "You said: which word was it?"
            second_request = json.dumps(llm_server.requests[1]["messages"])
            assert "remember the word apple" in second_request

            # Not for the bot: channel chatter, and a thread it is not in.
            ignored = [
                await slack.send_event(slack.message("just chatting", user="U1", channel="C1")),
                await slack.send_event(slack.message("side talk", user="U1", channel="C1", thread_ts=slack.new_ts())),
            ]
            await slack.wait_for(lambda: all(slack.acked(e) for e in ignored))

            other = slack.message("<@UBOT> hello", user="U1", channel="C1")
            await slack.send_event(slack.mention(other))
            await slack.send_event(other)
            await channel.wait_finalized(3)
            [other_reply] = slack.replies("C1", other["ts"])
            assert other_reply.final_text == "You said: hello"
            assert "apple" not in json.dumps(llm_server.requests[2]["messages"])  # a new thread, a new history

            assert slack.replies("C1") == []  # nothing top-level in the channel
            assert user_texts(llm_server) == ["remember the word apple", "which word was it?", "hello"]
            assert len(await history(app, f"slack:C1:{thread}")) == 4
            assert len(await history(app, f"slack:C1:{other['ts']}")) == 2


async def test_audio_clip_is_transcribed_and_answered(home: Path) -> None:
    heard: list[AudioPart] = []

    async def transcribe(audio: AudioPart) -> str:
        heard.append(audio)
        return "what is the capital of France"

    clip_bytes = b"\x1aE\xdf\xa3fake-webm-voice-clip"
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server) as (app, channel):
            assert app.orchestrator is not None
            app.orchestrator.transcribe, app.orchestrator.speak = transcribe, None
            clip = slack.add_file(
                "audio_message.webm", "audio/webm", clip_bytes, subtype="slack_audio", duration_ms=2300
            )
            await slack.send_event(slack.message("", channel="D1", subtype="file_share", files=[clip]))
            await channel.wait_finalized(1)
            assert slack.posted[0].final_text == "You said: what is the capital of France"
            [audio] = heard
            assert (audio.data, audio.mime, audio.voice_note, audio.duration_s) == (clip_bytes, "audio/webm", True, 2.3)
            # Downloaded with the bot token.
            assert slack.downloads == [(clip["id"], f"Bearer {slack.bot_token}")]


async def test_a_spoken_clip_is_transcribed_by_whisper_and_answered_with_a_voice_reply(home: Path) -> None:
    need_voice_stack()
    # What Slack's clip recorder uploads: AAC in an MP4 container, subtype slack_audio.
    pcm = await espeak_pcm("What is the capital of France?")
    data, mime = encode_as(pcm, "m4a")
    async with FakeSlackServer() as slack, FakeLLMServer([Reply(text="Paris is the capital of France.")]) as llm_server:
        async with slack_app(home, slack, llm_server) as (_, channel):
            clip = slack.add_file(
                "audio_message.m4a", mime, data, subtype="slack_audio", duration_ms=int(len(pcm) / 16)
            )
            await slack.send_event(slack.message("", channel="D1", subtype="file_share", files=[clip]))
            # Real speech-to-text (the bundled Whisper model) and text-to-speech: give them time.
            await slack.wait_for(lambda: any(u.completed for u in slack.uploads.values()), timeout=120)
            await channel.wait_finalized(1)
    assert {"capital", "france"} <= words(user_texts(llm_server)[0])
    [reply] = slack.posted
    assert reply.final_text == "Paris is the capital of France."
    [upload] = slack.uploads.values()
    assert upload.filename.endswith(".ogg") and upload.data.startswith(b"OggS")
    assert (upload.channel, upload.thread_ts) == ("D1", None)


async def test_a_429_on_chat_update_loses_nothing(home: Path) -> None:
    answer = "A reply long enough to need several edits, so that one of them meets the rate limit."
    async with (
        FakeSlackServer() as slack,
        FakeLLMServer([Reply(text=answer, chunk_size=5, delay_per_chunk=0.02)]) as llm_server,
    ):
        # Two 429s: the SDK's retry handler waits out the first; the second reaches the gateway as
        # RetryAfter, which waits and then sends the latest text.
        slack.rate_limit("chat.update", times=2, retry_after=1)
        async with slack_app(home, slack, llm_server, rate_limit_retries=1) as (app, channel):
            await slack.send_event(slack.message("tell me something", channel="D1"))
            await channel.wait_finalized(1)
            [reply] = slack.posted
            assert reply.final_text == answer
            assert [c.status for c in slack.calls_to("chat.update")][:2] == [429, 429]
            assert app.gateway is not None and app.gateway.editor.stats.retry_after == 1
            assert app.gateway.editor.stats.errors == 0


async def test_a_429_on_a_whole_message_is_retried_by_the_gateway(home: Path) -> None:
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        slack.rate_limit("chat.postMessage", times=1, retry_after=1)
        async with slack_app(home, slack, llm_server, rate_limit_retries=0) as (_app, channel):
            await slack.send_event(slack.message("/help", channel="D1"))
            await channel.wait_finalized(1)
            assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 200]
            assert "/new" in slack.posted[0].text


def whole(text: str) -> str:
    return " ".join(text.split())


async def test_msg_too_long_is_cut_smaller_and_the_reply_arrives_whole(home: Path) -> None:
    # One long paragraph: the channel's own cut (at 4,000) ends at a sentence close to it, over Slack's 3,000.
    answer = " ".join(f"Sentence {i} says a little more." for i in range(220))
    assert 6000 < len(answer) < 8000
    async with (
        FakeSlackServer() as slack,
        FakeLLMServer([Reply(text=answer, chunk_size=200, delay_per_chunk=0.005)]) as llm_server,
    ):
        # Slack counts differently from the 4,000 characters the channel declares: it says msg_too_long.
        slack.limit_text("chat.postMessage", 3000)
        slack.limit_text("chat.update", 3000)
        async with slack_app(home, slack, llm_server) as (app, _):
            await slack.send_event(slack.message("explain at length", channel="D1"))
            await slack.wait_for(lambda: whole(" ".join(p.final_text for p in slack.posted)) == whole(answer))
            assert app.gateway is not None
            stats = app.gateway.editor.stats
    refused = slack.refused()
    assert refused and {c.error for c in refused} == {"msg_too_long"} and stats.too_long == len(refused)
    assert len(slack.posted) >= 3 and all(len(p.final_text) <= 3000 for p in slack.posted)
    assert stats.undelivered_chars == 0 and stats.errors == 0
    assert not any("could not be delivered" in p.final_text for p in slack.posted)


async def test_a_refused_chunk_is_skipped_the_rest_arrives_and_the_user_is_told(home: Path) -> None:
    shown = "Here is what I found in the shared channel."
    link = "The report is at https://files.slack.com/files-pri/T0001-F0001/report.pdf for those who can see it."
    after = "And the summary: " + " ".join(f"point{i}" for i in range(20)) + "."
    gates = Gates()
    # Three parts, a tool call (a gate the test opens) between each: shown, then refused, then the rest.
    reply = [
        Reply(text=shown, chunk_size=8, tool_calls=[{"name": "gate", "arguments": {"name": "a"}}]),
        # In one piece: no edit can show the start of the link before the rest arrives.
        Reply(text=link, chunk_size=len(link), tool_calls=[{"name": "gate", "arguments": {"name": "b"}}]),
        Reply(text=after, chunk_size=8),
    ]
    async with FakeSlackServer() as slack, FakeLLMServer(reply) as llm_server:
        # A Slack Connect channel whose admins block links to Slack files: only messages with one are refused.
        slack.refuse_when(lambda text: "files.slack.com" in text, "slack_connect_file_link_sharing_blocked")
        async with slack_app(home, slack, llm_server, tools=[gates.tool()]) as (app, _):
            await slack.send_event(slack.message("what did you find?", channel="D1"))
            await gates.wait_entered("a")
            await slack.wait_for(lambda: [p.final_text for p in slack.posted] == [shown])
            gates.release["a"].set()
            await gates.wait_entered("b")
            # The edit adding it is refused (the message keeps what it shows), then the message of its own.
            refusals = ["chat.update", "chat.postMessage"]
            await slack.wait_for(lambda: [c.method for c in slack.refused()] == refusals)
            gates.release["b"].set()
            await slack.wait_for(lambda: any("could not be delivered" in p.text for p in slack.posted))
            assert app.gateway is not None
            stats = app.gateway.editor.stats
    texts = [p.final_text for p in slack.posted]
    skipped = slack.refused("chat.postMessage")[0].params["text"]
    assert texts[:2] == [shown, after] and "files.slack.com" in skipped and whole(skipped).endswith("see it.")
    reason = "links to Slack files are blocked in this Slack Connect channel"
    undelivered = len("\n\n" + link)  # the raw text skipped: the paragraph break before it included
    assert texts[2:] == [f"({undelivered} characters could not be delivered: {reason})"]
    assert stats.undelivered_chars == undelivered and stats.errors == 0


async def test_refusals_reach_the_gateway_as_its_own_errors(home: Path) -> None:
    async with FakeSlackServer() as slack:
        channel = SlackChannel(slack_config(slack), workspace=home / "workspace")
        await channel.start(lambda message: asyncio.sleep(0))
        try:
            here = Address(channel="slack", chat_id="D1")
            slack.limit_text("chat.postMessage", 10)
            with pytest.raises(TooLong):
                await channel.send(here, "x" * 11)
            ts = await channel.send(here, "x" * 10)
            slack.close_edits(ts)  # the workspace allows edits for a while only
            with pytest.raises(Refused) as closed:
                await channel.edit(here, ts, "longer now")
            assert "no longer allows editing" in closed.value.reason
            with pytest.raises(Refused):  # deleted by someone meanwhile
                await channel.edit(here, "1.000001", "nothing there")
            # An archived channel fails every message alike: a permanent error, not a refusal of this one.
            slack.refuse_when(lambda text: True, "is_archived")
            with pytest.raises(ChannelError) as archived:
                await channel.send(here, "hello")
            assert archived.value.permanent and not isinstance(archived.value, (Refused, TooLong))
        finally:
            await channel.stop()


async def test_disconnect_envelope_mid_conversation_reconnects_and_nothing_is_lost_or_doubled(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.channels.slack")
    gates = Gates()

    def responder(request: FakeRequest) -> Reply:
        if request.last_tool_result() is not None:
            return Reply(text="and done after the reconnect.")
        text = request.last_user_text()
        if text == "first":  # a reply posted, then held in a tool call across the reconnect
            return Reply(text="Working on it,", tool_calls=[{"name": "gate", "arguments": {"name": "A"}}])
        return Reply(text=f"You said: {text}")

    async with FakeSlackServer() as slack, FakeLLMServer(responder=responder) as llm_server:
        async with slack_app(home, slack, llm_server, tools=[gates.tool()]) as (app, channel):
            assert app.gateway is not None
            first = await slack.send_event(slack.message("first", channel="D1"))
            await gates.wait_entered("A")
            await slack.wait_for(lambda: len(slack.posted) == 1 and slack.acked(first))  # mid-reply now
            # This one's ack is lost, as can happen while a socket is being replaced.
            second = await slack.send_event(slack.message("second", channel="D1"), lose_ack=True)
            await slack.wait_for(lambda: any(e == second for e, _ in slack.acks))

            slack.allow_open.clear()
            await slack.send_disconnect()
            await slack.wait_for(lambda: slack.opens == 2)
            assert channel.status() == "reconnecting"
            assert app.gateway.status()["slack"] == "reconnecting"
            slack.allow_open.set()
            # The new connection redelivers the unacknowledged envelope; it is acknowledged, not re-answered.
            await slack.wait_for(lambda: slack.connections == 2 and slack.acked(second))
            assert channel.status() == "up" and channel.reconnects == 1

            gates.release["A"].set()
            await slack.send_event(slack.message("third", channel="D1"))
            await channel.wait_finalized(3)
            assert [p.final_text for p in slack.replies("D1")] == [
                "Working on it,\n\nand done after the reconnect.",
                "You said: second",
                "You said: third",
            ]
            assert user_texts(llm_server) == ["first", "first", "second", "third"]  # the 2nd: the tool result
            [env] = [e for e in slack.envelopes if e.envelope_id == second]
            assert env.deliveries == [1, 2]
    assert "slack asked to reconnect (refresh_requested)" in caplog.text
    assert "slack socket reconnected (connection 2)" in caplog.text


async def test_a_dropped_socket_reconnects_and_redelivered_events_are_answered_once(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.channels.slack")
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server, ping_interval=1.0) as (_app, channel):
            await slack.send_event(slack.message("before", channel="D1"))
            await channel.wait_finalized(1)
            slack.allow_open.clear()
            await slack.drop_socket()
            await slack.wait_for(lambda: slack.opens == 2)  # the SDK's monitor noticed
            assert channel.status() == "reconnecting"
            after = await slack.send_event(slack.message("after the drop", channel="D1"))
            slack.allow_open.set()
            await channel.wait_finalized(2)
            await slack.wait_for(lambda: slack.acked(after))
            assert slack.connections == 2 and channel.status() == "up"
            assert [p.final_text for p in slack.replies("D1")] == ["You said: before", "You said: after the drop"]
            assert user_texts(llm_server) == ["before", "after the drop"]
    assert "slack socket reconnected (connection 2)" in caplog.text


async def test_an_unknown_user_is_refused(home: Path) -> None:
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server) as (app, channel):
            stranger = [
                await slack.send_event(slack.message("hello?", user="U666", channel="D666")),
                await slack.send_event(slack.message("/restart", user="U666", channel="D666")),
            ]
            mention = slack.message("<@UBOT> hey", user="U666", channel="C1")
            stranger.append(await slack.send_event(slack.mention(mention)))
            await slack.wait_for(lambda: all(slack.acked(e) for e in stranger))
            await slack.send_event(slack.message("hi", user="U1", channel="D1"))
            await channel.wait_finalized(1)
            assert [(p.channel, p.final_text) for p in slack.posted] == [("D1", "You said: hi")]
            assert user_texts(llm_server) == ["hi"] and not app.restart_requested


async def test_an_unknown_user_gets_the_configured_rejection(home: Path) -> None:
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server, rejection_message="I only talk to my owner.") as (_, channel):
            await slack.send_event(slack.message("hello?", user="U666", channel="D666"))
            await channel.wait_finalized(1)
            assert [(p.channel, p.text) for p in slack.posted] == [("D666", "I only talk to my owner.")]
            assert llm_server.requests == []


async def test_the_bot_never_answers_itself(home: Path) -> None:
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server, allow_from=["*"]) as (_, channel):
            own = [
                slack.message("I am the bot", user="UBOT", channel="D1", bot_id="BBOT"),
                slack.message("posted by the app", channel="D1", subtype="bot_message", bot_id="BBOT", user=None),
                slack.mention(slack.message("<@UBOT> talking to myself", user="UBOT", channel="C1")),
                slack.message("edited", channel="D1", subtype="message_changed"),
            ]
            sent = [await slack.send_event(e) for e in own]
            await slack.wait_for(lambda: all(slack.acked(e) for e in sent))
            await slack.send_event(slack.message("hi", user="U1", channel="D1"))
            await channel.wait_finalized(1)
            # Its own reply came back as an event too (and its edits as message_changed): all acknowledged.
            await slack.wait_for(lambda: all(e.acked for e in slack.envelopes))
            assert [p.final_text for p in slack.posted] == ["You said: hi"]
            assert user_texts(llm_server) == ["hi"]


# --- files and voice --------------------------------------------------------------------------


async def test_images_go_to_the_model_and_other_files_to_the_workspace(home: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server) as (_, channel):
            image = slack.add_file("cat.png", "image/png", png)
            pdf = slack.add_file("../../Q3 report.pdf", "application/pdf", b"%PDF-1.4 fake")
            await slack.send_event(
                slack.message("look at these", channel="D1", subtype="file_share", files=[image, pdf])
            )
            await channel.wait_finalized(1)
            request = json.dumps(llm_server.requests[0]["messages"])
            assert "data:image/png;base64," in request
            saved = home / "workspace" / "inbox" / f"{pdf['id']}-Q3_report.pdf"
            assert saved.read_bytes() == b"%PDF-1.4 fake"
            assert f"saved at inbox/{saved.name}" in request


async def test_an_unknown_users_files_are_never_fetched_until_the_owner_approves(home: Path) -> None:
    inbox = home / "workspace" / "inbox"
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server, pairing=True) as (_, channel):
            files = [
                slack.add_file("cat.png", "image/png", b"\x89PNG\r\n\x1a\n"),
                slack.add_file("junk.bin", "application/octet-stream", b"x" * 4096),
                slack.add_file("clip.m4a", "audio/mp4", b"\0" * 64, subtype="slack_audio"),
            ]
            await slack.send_event(slack.message("", user="U666", channel="D666", subtype="file_share", files=files))
            # Files only, none fetched: the message still reached the orchestrator, which sent a pairing code.
            await channel.wait_finalized(1)
            assert slack.downloads == [] and not inbox.exists()
            code = CODE.search(slack.replies("D666")[0].text)
            assert code is not None
            rc, _ = await cli(home, "pairing", "approve", code.group(1))
            assert rc == 0
            # Approved from the CLI (another process): the next file is fetched, as an allowed user's is.
            pdf = slack.add_file("notes.pdf", "application/pdf", b"%PDF from U666")
            await slack.send_event(
                slack.message("read this", user="U666", channel="D666", subtype="file_share", files=[pdf])
            )
            await channel.wait_finalized(2)
            assert slack.downloads == [(pdf["id"], f"Bearer {slack.bot_token}")]
            assert [p.name for p in inbox.iterdir()] == [f"{pdf['id']}-notes.pdf"]
            assert len(llm_server.requests) == 1 and "saved at inbox/" in user_texts(llm_server)[0]


async def test_a_refused_download_is_reported_not_lost(home: Path) -> None:
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server) as (_, channel):
            foreign = {
                "id": "FX",
                "name": "x.png",
                "mimetype": "image/png",
                "url_private": "https://evil.example/x.png",
            }
            await slack.send_event(slack.message("see attached", channel="D1", subtype="file_share", files=[foreign]))
            await channel.wait_finalized(1)
            assert user_texts(llm_server) == [
                "see attached\n[attachment x.png could not be read: no download URL on a Slack host (evil.example)]"
            ]
            assert slack.downloads == []  # the token never went to another host


async def test_voice_replies_are_uploaded_in_three_steps(home: Path) -> None:
    ogg = b"OggS" + b"\x00" * 60
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(home, slack, llm_server) as (app, _):
            address = Address(channel="slack", chat_id="C1", thread_id="1700000001.000001")
            await app.bus.publish_outgoing(OutgoingMessage(address=address, parts=[AudioPart(data=ogg)]))
            await slack.wait_for(lambda: any(u.completed for u in slack.uploads.values()))
            [upload] = slack.uploads.values()
            assert (upload.filename, upload.data, upload.channel, upload.thread_ts) == (
                "voice-reply.ogg",
                ogg,
                "C1",
                "1700000001.000001",
            )
            assert [c.method for c in slack.calls if c.method.startswith("files.")] == [
                "files.getUploadURLExternal",
                "files.completeUploadExternal",
            ]


# --- HTTP events mode -------------------------------------------------------------------------


def signed(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}", "Content-Type": "application/json"}


async def test_http_events_mode_verifies_signatures(home: Path) -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        async with slack_app(
            home, slack, llm_server, mode="http", app_token=None, signing_secret=secret, http_port=0
        ) as (_, channel):
            url = f"http://127.0.0.1:{channel.http_port}/slack/events"

            def callback(text: str, event_id: str) -> str:
                return json.dumps(
                    {
                        "type": "event_callback",
                        "team_id": slack.team_id,
                        "event_id": event_id,
                        "event": slack.message(text, channel="D1"),
                    }
                )

            async with aiohttp.ClientSession() as http:
                challenge = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "t"})
                async with http.post(url, data=challenge, headers=signed(secret, challenge)) as resp:
                    assert resp.status == 200 and "abc123" in await resp.text()
                forged = callback("forged", "Ev1")
                async with http.post(url, data=forged, headers=signed("wrong-secret", forged)) as resp:
                    assert resp.status == 401
                stale = callback("replayed", "Ev2")
                async with http.post(url, data=stale, headers=signed(secret, stale, int(time.time()) - 3600)) as resp:
                    assert resp.status == 401
                good = callback("signed and sound", "Ev3")
                for retry in range(2):  # Slack retries when it did not get a 200 in time
                    headers = signed(secret, good) | ({"X-Slack-Retry-Num": "1"} if retry else {})
                    async with http.post(url, data=good, headers=headers) as resp:
                        assert resp.status == 200
            await channel.wait_finalized(1)
            assert [p.final_text for p in slack.posted] == ["You said: signed and sound"]
            assert user_texts(llm_server) == ["signed and sound"]


# --- configuration and start-up ---------------------------------------------------------------


def test_config_names_the_missing_token(home: Path) -> None:
    with pytest.raises(ConfigError, match="bot_token"):
        load_config(channels={"slack": {"enabled": True}})
    with pytest.raises(ConfigError, match="app_token"):
        load_config(channels={"slack": {"enabled": True, "bot_token": "xoxb-1"}})
    with pytest.raises(ConfigError, match="must start with xoxb-"):
        load_config(channels={"slack": {"enabled": True, "bot_token": "xapp-1", "app_token": "xapp-2"}})
    with pytest.raises(ConfigError, match="signing_secret"):
        load_config(channels={"slack": {"enabled": True, "bot_token": "xoxb-1", "mode": "http"}})
    config = load_config(
        channels={
            "slack": {
                "enabled": True,
                "bot_token": "xoxb-secret",
                "app_token": "xapp-secret",
                "api_base_url": "https://slack-gov.com/api",
            }
        }
    )
    assert config.channels.slack.api_base_url == "https://slack-gov.com/api/"
    assert "xoxb-secret" not in json.dumps(config.masked()) and "xapp-secret" not in str(config)


def test_the_registry_builds_the_slack_channel_with_the_workspace(home: Path) -> None:
    from operator_use.channels.registry import build_channels

    config = load_config(
        agent={"workspace": home / "ws"},
        channels={"slack": {"enabled": True, "bot_token": "xoxb-1", "app_token": "xapp-1"}},
    )
    [slack] = build_channels(config, only=["slack"])
    assert isinstance(slack, SlackChannel) and slack.workspace == home / "ws"
    assert slack.capabilities.formatting == "slack_mrkdwn" and slack.capabilities.edit_interval == 1.0


async def test_a_wrong_token_fails_the_start_without_stopping_the_app(home: Path) -> None:
    async with FakeSlackServer() as slack, FakeLLMServer(responder=scripted_responder) as llm_server:
        channel = SlackChannel(slack_config(slack, bot_token="xoxb-wrong"), workspace=home / "workspace")
        llm = OpenAILLM("fake-gpt", "test-key", base_url=llm_server.openai_base_url)
        async with make_app(home, channel, llm) as app:  # type: ignore[arg-type]
            assert app.gateway is not None and app.gateway.status()["slack"] == "down"
            assert slack.opens == 0


def test_event_routing_rules() -> None:
    router = EventRouter(max_threads=2)
    router.bot_user_id, router.bot_id = "UBOT", "BBOT"
    dm = {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1", "ts": "1.1", "text": "a &amp; b"}
    assert router.route(dm) is not None and router.route(dm).text == "a & b"  # type: ignore[union-attr]
    assert router.claim(dm) and not router.claim(dm)
    in_dm_thread = {**dm, "ts": "1.3", "thread_ts": "1.2"}
    assert router.route(in_dm_thread).thread_id == "1.2"  # type: ignore[union-attr]
    chatter = {"type": "message", "channel": "C1", "channel_type": "channel", "user": "U1", "ts": "2.1", "text": "hi"}
    assert router.route(chatter) is None
    mention = {**chatter, "ts": "2.2", "text": "<@UBOT> hi"}
    route = router.route(mention)
    assert route is not None and (route.thread_id, route.text, route.mentioned) == ("2.2", "hi", True)
    assert router.route({**chatter, "ts": "2.3", "thread_ts": "2.2"}) is not None
    # Tracked threads are bounded: the oldest is forgotten.
    router.joined("C1", "3.1")
    router.joined("C1", "3.2")
    assert router.route({**chatter, "ts": "2.4", "thread_ts": "2.2"}) is None
    assert router.route({**dm, "user": "UBOT"}) is None and router.route({**dm, "bot_id": "BBOT"}) is None
    assert router.route({**dm, "subtype": "message_deleted"}) is None
