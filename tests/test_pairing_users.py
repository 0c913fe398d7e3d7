"""Pairing and users/roles end to end: the running agent and the `operator-use` CLI (a separate process,
as the owner would run it) share the files under <home>/security."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from operator_use.app import App
from operator_use.channels.base import ChannelConfig
from operator_use.messages import IncomingMessage, OutgoingMessage, TextPart
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.security.config import SecurityConfig
from operator_use.security.pairing import ALPHABET, PairingError, PairingStore
from operator_use.security.store import StoreCorrupt
from operator_use.security.users import UserError, UserStore

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.apps import build_app
from .support.chat import ChatChannel
from .test_pipeline_e2e import scripted_responder

CODE = re.compile(r"pairing approve ([A-Z2-9]{8})")


async def cli(home: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operator_use",
        *args,
        env={**os.environ, "OPERATOR_HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def llm(server: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)


def pairing_channel(**kw: object) -> ChatChannel:
    return ChatChannel(ChannelConfig(enabled=True, allow_from=["alice"], admins=["alice"], pairing=True, **kw))  # type: ignore[arg-type]


async def sync(channel: ChatChannel, n: int) -> None:
    """alice's n-th message is answered: everything sent before it has been routed (strangers' answers
    may still be on their way: see `settle`)."""
    await channel.say(f"sync {n}", user="alice", chat="alice")
    await channel.wait_for(lambda: f"You said: sync {n}" in channel.texts("alice"))


async def settle(app: App, channel: ChatChannel, n: int) -> None:
    """Everything sent before has been handled and its answer delivered, unknown senders' included."""
    await sync(channel, n)
    assert app.orchestrator is not None and app.orchestrator.strangers is not None
    await app.orchestrator.strangers.join()
    answers = Counter(
        i.address.chat_id
        for i in app.bus.outgoing_log  # type: ignore[attr-defined]
        if isinstance(i, OutgoingMessage)
    )
    await channel.wait_for(lambda: all(len(channel.texts(chat)) >= k for chat, k in answers.items()))


# --- pairing ---------------------------------------------------------------------------------------


async def test_pairing_code_approved_from_the_cli(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server)) as app:
            await channel.say("hello?", user="mallory", chat="mallory")
            await channel.wait_for(lambda: len(channel.texts("mallory")) == 1)
            reply = channel.texts("mallory")[0]
            code = CODE.search(reply).group(1)  # type: ignore[union-attr]
            assert len(code) == 8 and set(code) <= set(ALPHABET) and "expires in 60 minutes" in reply
            # Asking again does not spam a new code; the agent still does not answer.
            await channel.say("hello??", user="mallory", chat="mallory")
            await settle(app, channel, 1)
            assert len(channel.texts("mallory")) == 1
            rc, out = await cli(home, "pairing", "list")
            assert rc == 0 and f"pending  {code}  test:mallory  mallory" in out
            rc, out = await cli(home, "pairing", "approve", code.lower())  # case does not matter
            assert rc == 0 and out.strip() == "Approved test:mallory (mallory)."
            await channel.say("now?", user="mallory", chat="mallory")
            await channel.wait_for(lambda: "You said: now?" in channel.texts("mallory"))
            # Approved means allowed, not admin.
            await channel.say("/restart", user="mallory", chat="mallory")
            await channel.wait_for(lambda: "/restart is for admins only." in channel.texts("mallory"))
            rc, out = await cli(home, "pairing", "approve", code)
            assert rc == 1 and "no pairing request with code" in out
    # Approvals survive a restart of the agent.
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server)):
            await channel.say("back again", user="mallory", chat="mallory")
            await channel.wait_for(lambda: "You said: back again" in channel.texts("mallory"))
            rc, out = await cli(home, "pairing", "revoke", "test", "mallory")
            assert rc == 0
            await channel.say("still there?", user="mallory", chat="mallory")
            await channel.wait_for(lambda: len(channel.texts("mallory")) == 2)  # a new code, no answer
            assert CODE.search(channel.texts("mallory")[1])


async def test_pairing_limits(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server)) as app:
            for who in ("u1", "u2", "u3", "u4"):
                await channel.say("hi", user=who, chat=who)
            # A group chat never hands out codes.
            await channel.emit(
                IncomingMessage(
                    channel="test", chat_id="group", user_id="u5", is_direct=False, parts=[TextPart(text="hi")]
                )
            )
            await settle(app, channel, 1)
            assert all(CODE.search(channel.texts(w)[0]) for w in ("u1", "u2", "u3"))
            assert channel.texts("u4") == [] and channel.texts("group") == []
            rc, out = await cli(home, "pairing", "deny", CODE.search(channel.texts("u1")[0]).group(1))  # type: ignore[union-attr]
            assert rc == 0 and "Denied test:u1" in out
            await channel.say("hi again", user="u4", chat="u4")
            await channel.wait_for(lambda: len(channel.texts("u4")) == 1)  # a slot was freed
        # Pairing off (the default): an unknown sender gets nothing at all.
        channel = ChatChannel(ChannelConfig(enabled=True, allow_from=["alice"]))
        async with build_app(home, channel, llm(server)) as app:
            await channel.say("hi", user="u9", chat="u9")
            await settle(app, channel, 2)
            assert channel.texts("u9") == []


def test_pairing_store_expiry_and_pending_limit(tmp_path: Path) -> None:
    store = PairingStore(tmp_path / "pairing.json", ttl=3600, max_pending=3)
    first, created = store.request("tg", "1", "one", now=1000)
    assert created and first is not None and first.expires_at == 4600
    assert store.request("tg", "1", "one", now=1001) == (first, False)
    for uid in ("2", "3"):
        assert store.request("tg", uid, now=1000)[1]
    assert store.request("tg", "4", now=1000) == (None, False)  # three pending on this channel
    assert store.request("discord", "4", now=1000)[1]  # the limit is per channel
    # An hour later the codes have expired: approving fails, and new requests fit again.
    with pytest.raises(PairingError, match="expired"):
        store.approve(first.code, now=4601)
    assert store.request("tg", "4", now=4601)[1]
    assert store.approved() == {}


def test_a_corrupt_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "pairing.json"
    store = PairingStore(path)
    req, _ = store.request("tg", "1")
    store.approve(req.code)  # type: ignore[union-attr]
    path.write_text('{"approved": {"tg:1": {}}, "pending": [')  # torn by hand
    with pytest.raises(StoreCorrupt, match=r"pairing.json .* is corrupt and was left untouched"):
        store.approved()
    with pytest.raises(StoreCorrupt):
        store.request("tg", "2")
    assert path.read_text() == '{"approved": {"tg:1": {}}, "pending": ['  # never rewritten empty
    path.write_text("[1, 2]")
    with pytest.raises(StoreCorrupt, match="must hold a JSON object"):
        UserStore(path).list()


async def test_corrupt_files_keep_the_last_good_access(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    rc, _ = await cli(home, "user", "add", "dave", "--role", "user", "test", "dave")
    assert rc == 0
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = pairing_channel()
        async with build_app(home, channel, llm(server)):
            await channel.say("one", user="dave", chat="dave")
            await channel.wait_for(lambda: "You said: one" in channel.texts("dave"))
            (home / "security" / "users.json").write_text("{not json")
            await channel.say("two", user="dave", chat="dave")
            await channel.wait_for(lambda: "You said: two" in channel.texts("dave"))
    assert "users not reloaded, the previous ones stay in force" in caplog.text
    rc, out = await cli(home, "user", "list")
    assert rc == 2 and "users.json (users and their identities) is corrupt" in out


# --- users and roles -------------------------------------------------------------------------------


async def test_roles_admin_and_user(home: Path) -> None:
    rc, out = await cli(home, "user", "add", "carol", "--role", "admin", "test", "carol-id")
    assert rc == 0 and out.strip() == "Added carol (admin) as test:carol-id."
    assert (await cli(home, "user", "link", "carol", "discord", "999"))[0] == 0
    assert (await cli(home, "user", "add", "dave", "test", "dave-id"))[0] == 0  # role "user" by default
    rc, out = await cli(home, "user", "list")
    assert out.splitlines() == ["carol\tadmin\ttest:carol-id, discord:999", "dave\tuser\ttest:dave-id"]
    rc, out = await cli(home, "user", "link", "dave", "test", "carol-id")
    assert rc == 1 and "already linked to user 'carol'" in out
    rc, out = await cli(home, "user", "add", "erin", "--role", "superuser")
    assert rc == 1 and "unknown role 'superuser'" in out

    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel(ChannelConfig(enabled=True, allow_from=["alice"], admins=["alice"]))
        async with build_app(home, channel, llm(server)) as app:
            # Neither carol nor dave is in the channel's allow_from: their user records let them in.
            await channel.say("hi", user="dave-id", chat="d")
            await channel.wait_for(lambda: "You said: hi" in channel.texts("d"))
            await channel.say("/restart", user="dave-id", chat="d")
            await channel.wait_for(lambda: "/restart is for admins only." in channel.texts("d"))
            assert not app.restart_requested
            await channel.say("/help", user="dave-id", chat="d")
            await channel.wait_for(lambda: any(t.startswith("Commands:") for t in channel.texts("d")))
            assert "/restart" not in next(t for t in channel.texts("d") if t.startswith("Commands:"))
            await channel.say("/restart", user="carol-id", chat="c")
            await channel.wait_for(lambda: channel.texts("c") == ["Restarting..."])
            await asyncio.wait_for(app.wait_closed(), 10)
            assert app.restart_requested


async def test_role_that_does_not_grant_this_agent(home: Path) -> None:
    roles = {"guest": {"agents": ["other-agent"]}, "helper": {"agents": ["main"], "tools": ["read_*"]}}
    assert (await cli(home, "user", "add", "gina", "--role", "user", "test", "gina"))[0] == 0
    async with FakeLLMServer(responder=scripted_responder) as server:
        # The role is checked against the config the agent runs with.
        channel = ChatChannel(ChannelConfig(enabled=True, allow_from=["alice"]))
        app = build_app(home, channel, llm(server), security={"roles": roles})
        UserStore(home / "security" / "users.json").set_role("gina", "guest")
        async with app:
            await channel.say("let me in", user="gina", chat="g")
            await sync(channel, 1)
            assert channel.texts("g") == []


def tool_responder(request: FakeRequest) -> Reply:
    result = request.last_tool_result()
    if result is not None:
        return Reply(text=f"result: {result}")
    return Reply(tool_calls=[{"name": request.last_user_text(), "arguments": {"path": "note.txt"}}])


async def test_role_tool_permissions_and_agent_tools(home: Path) -> None:
    (home / "workspace").mkdir(parents=True)
    (home / "workspace" / "note.txt").write_text("a note")
    store = UserStore(home / "security" / "users.json")
    store.add("hal", "helper", "test", "hal")
    roles = {"helper": {"tools": ["read_*"]}}
    async with FakeLLMServer(responder=tool_responder) as server:
        channel = ChatChannel(ChannelConfig(enabled=True, allow_from=["alice"]))
        app = build_app(
            home, channel, llm(server), security={"roles": roles}, agent={"tools": ["read_file", "list_files", "web_*"]}
        )
        async with app:
            assert sorted(app.agent.tools.names()) == ["list_files", "read_file", "web_fetch", "web_search"]
            await channel.say("read_file", user="hal", chat="h")
            await channel.wait_for(lambda: "result: a note" in channel.texts("h"))
            await channel.say("list_files", user="hal", chat="h")
            await channel.wait_for(
                lambda: "result: Error: list_files is not available to this user (role)." in channel.texts("h")
            )
            # alice (channel allowlist, no user record) has every tool the agent has.
            await channel.say("list_files", user="alice", chat="a")
            await channel.wait_for(lambda: any(t.startswith("result: note.txt") for t in channel.texts("a")))


def test_user_store_rules(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    with pytest.raises(UserError, match="user name"):
        store.add("Bad Name", "user")
    store.add("ada", "admin", "telegram", "1")
    with pytest.raises(UserError, match="exists already"):
        store.add("ada", "user")
    with pytest.raises(UserError, match="no user 'bob'"):
        store.link("bob", "telegram", "2")
    store.link("ada", "discord", "9")
    store.unlink("ada", "telegram", "1")
    assert [(u.name, u.identities) for u in store.list()] == [("ada", ("discord:9",))]
    data = json.loads((tmp_path / "users.json").read_text())
    assert data == {"users": {"ada": {"identities": ["discord:9"], "role": "admin"}}}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_builtin_roles_stay_when_others_are_added() -> None:
    config = SecurityConfig(roles={"ops": {"admin": True}})  # type: ignore[dict-item]
    assert set(config.roles) == {"admin", "user", "ops"}
