"""Strangers cannot slow everyone: unknown senders are answered off the orchestrator's consumer, within
per-sender and global limits, and asking the pairing store about a known stranger writes nothing."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

import pytest

from operator_use.app import App
from operator_use.channels.base import ChannelConfig
from operator_use.security.pairing import PairingStore
from operator_use.security.strangers import Buckets, Strangers
from operator_use.security.users import UserStore

from .fakes.llm_server import FakeLLMServer
from .support.apps import build_app
from .support.chat import ChatChannel
from .test_pairing_users import CODE, cli, llm, pairing_channel, settle
from .test_pipeline_e2e import scripted_responder


def strangers(app: App) -> Strangers:
    assert app.orchestrator is not None and app.orchestrator.strangers is not None
    return app.orchestrator.strangers


def pairing_path(home: Path) -> Path:
    return home / "security" / "pairing.json"


def stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def codes_sent(channel: ChatChannel) -> int:
    return sum(1 for p in channel.posted if CODE.search(p.text))


async def test_a_stranger_flood_does_not_hold_up_an_allowed_user(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server)) as app:
            store = app.protection.access.pairing.store  # type: ignore[union-attr]
            for i in range(2000):  # 1,000 distinct fake senders, 1,000 messages from 20 repeating ones
                who = f"fake{i}" if i % 2 else f"again{i % 40}"
                await channel.say("let me in", user=who, chat=who)
            await channel.say("still there?", user="alice", chat="alice")
            await channel.wait_for(lambda: "You said: still there?" in channel.texts("alice"))
            # Before: every stranger message was a locked, fsynced write, all 2,000 of them before alice's turn.
            # Now at most the codes themselves are written (3 may wait per channel).
            assert store.writes <= 3
            await strangers(app).join()
            desk = strangers(app)
            await channel.wait_for(lambda: codes_sent(channel) == 3)
            assert store.writes == 3
            assert desk.admitted + desk.limited == 2000 and desk.admitted == desk.handled + desk.dropped
            assert desk.limited > 0


async def test_a_known_stranger_costs_no_write(home: Path) -> None:
    limits = {"strangers": {"per_sender_burst": 1000}}  # every message reaches the pairing store
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server), security=limits) as app:
            store = app.protection.access.pairing.store  # type: ignore[union-attr]
            for who in ("mallory", "u2", "u3"):
                await channel.say("hi", user=who, chat=who)
            await settle(app, channel, 1)
            assert codes_sent(channel) == 3 and store.writes == 3
            before = stamp(pairing_path(home))
            for n in range(30):  # pending already, or refused because three codes wait on the channel
                await channel.say(f"hello? {n}", user="mallory", chat="mallory")
                await channel.say(f"me too {n}", user="u4", chat="u4")
            await settle(app, channel, 2)
            assert stamp(pairing_path(home)) == before and store.writes == 3
            assert len(channel.texts("mallory")) == 1 and channel.texts("u4") == []
            # The CLI (another process) frees a slot: the agent's copy follows the file, u4 gets a code.
            code = CODE.search(channel.texts("u2")[0])
            assert code is not None
            rc, _ = await cli(home, "pairing", "deny", code.group(1))
            assert rc == 0
            await channel.say("and now?", user="u4", chat="u4")
            await channel.wait_for(lambda: len(channel.texts("u4")) == 1)
            assert CODE.search(channel.texts("u4")[0]) and store.writes == 4


async def test_the_consumer_never_waits_for_the_pairing_store(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock_path = pairing_path(home).with_name("pairing.json.lock")
    lock_path.parent.mkdir(parents=True)
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server), security={"strangers": {"queue": 2}}) as app:
            # As if the CLI were stuck holding the store's lock: issuing a code has to wait for it.
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                for n in range(10):
                    await channel.say("hi", user=f"new{n}", chat=f"new{n}")
                await channel.say("are you there?", user="alice", chat="alice")
                await channel.wait_for(lambda: "You said: are you there?" in channel.texts("alice"))
                assert codes_sent(channel) == 0  # the strangers are still waiting, alice is not
            finally:
                os.close(fd)
            await strangers(app).join()
            desk = strangers(app)
            # One in the worker, two queued; the rest dropped rather than queued without bound.
            assert desk.dropped >= 7 and desk.dropped + desk.handled == 10
            await channel.wait_for(lambda: codes_sent(channel) == desk.handled)
    assert "on a full queue" in caplog.text


async def test_channels_ask_the_same_access_before_fetching_a_senders_files(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server)):
            assert await channel.may_fetch("alice") and not await channel.may_fetch("mallory")
            await channel.say("hi", user="mallory", chat="mallory")
            await channel.wait_for(lambda: len(channel.texts("mallory")) == 1)
            code = CODE.search(channel.texts("mallory")[0])
            assert code is not None
            rc, _ = await cli(home, "pairing", "approve", code.group(1))
            assert rc == 0
            # Seen at once, before any message made the orchestrator reload the files.
            assert await channel.may_fetch("mallory")
            UserStore(home / "security" / "users.json").add("dave", "user", "test", "dave-id")
            assert await channel.may_fetch("dave-id") and not await channel.may_fetch("erin")
    # Without the App's access (a channel used on its own), its config alone decides.
    assert await pairing_channel().may_fetch("alice") and not await pairing_channel().may_fetch("mallory")


def rejecting_channel() -> ChatChannel:
    return ChatChannel(ChannelConfig(enabled=True, allow_from=["alice"], rejection_message="Not for you."))


async def test_rejections_are_rate_limited_per_sender(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    limits = {"strangers": {"per_sender_burst": 2, "per_sender_per_minute": 0.001}}
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = rejecting_channel()
        async with build_app(home, channel, llm(server), security=limits) as app:
            for n in range(10):
                await channel.say(f"spam {n}", user="spammer", chat="spam")
            await channel.say("hello", user="visitor", chat="visit")
            await settle(app, channel, 1)
            assert channel.texts("spam") == ["Not for you."] * 2 and channel.texts("visit") == ["Not for you."]
            assert strangers(app).limited == 8
    assert caplog.text.count("denied message from test user spammer") == 2  # the log is limited too
    assert "totals 8 and 0" in caplog.text  # the ignored ones are counted


async def test_all_strangers_share_one_budget(home: Path) -> None:
    limits = {"strangers": {"burst": 5, "per_second": 0.001}}
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = rejecting_channel()
        async with build_app(home, channel, llm(server), security=limits) as app:
            for n in range(50):
                await channel.say("hi", user=f"fake{n}", chat=f"fake{n}")
            await settle(app, channel, 1)
            assert sum(1 for p in channel.posted if p.text == "Not for you.") == 5
            assert strangers(app).limited == 45


def test_buckets_are_bounded_and_remember_who_keeps_knocking() -> None:
    buckets = Buckets(burst=2, per_second=1 / 60, max_keys=1000)
    now = 0.0
    for _ in range(2):
        buckets.take("spammer", now)
    for n in range(100_000):
        key = f"fake{n}"
        if buckets.tokens(key, now) >= 1:
            buckets.take(key, now)
        if n % 100 == 0:
            assert buckets.tokens("spammer", now) < 1  # checked: still the empty bucket, not forgotten
    assert len(buckets) == 1000
    assert buckets.tokens("spammer", now + 60) == pytest.approx(1)  # one more a minute
    assert buckets.tokens("fake0", now) == 2  # long forgotten: a full bucket again


def test_pairing_store_answers_known_senders_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "pairing.json"
    agent, cli_side = PairingStore(path, max_pending=2), PairingStore(path, max_pending=2)
    first, created = agent.request("tg", "1", now=1000)
    assert created and agent.request("tg", "2", now=1000)[1]
    before = stamp(path)
    for _ in range(5):
        assert agent.request("tg", "1", now=1001) == (first, False)  # pending already
        assert agent.request("tg", "3", now=1001) == (None, False)  # the channel is full
    assert stamp(path) == before and agent.store.writes == 2
    # What the other process changes is seen on the next request, without a restart.
    assert first is not None
    cli_side.approve(first.code, now=1002)
    assert agent.request("tg", "1", now=1003) == (None, False)  # approved
    request, created = agent.request("tg", "3", now=1003)  # the approval freed a slot
    assert created and request is not None and request.user_id == "3"
    assert agent.store.writes == 3 and cli_side.store.writes == 1
