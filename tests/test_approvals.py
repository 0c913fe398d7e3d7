"""Tool approvals end to end: test channel -> orchestrator -> agent (real SDK, fake LLM) -> approval
request in the chat -> /approve or /deny (or silence) -> the tool runs or not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from operator_use.channels.base import ChannelConfig
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.security.approvals import verdict_for
from operator_use.security.config import ApprovalsConfig

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.apps import approval_id, build_app
from .support.chat import ChatChannel

COMMAND = "echo ran > proof.txt && echo shell-ok"


def shell_responder(request: FakeRequest) -> Reply:
    """Any message -> run_shell(COMMAND); a tool result -> "result: <it>"."""
    result = request.last_tool_result()
    if result is not None:
        return Reply(text=f"result: {result}")
    return Reply(tool_calls=[{"name": "run_shell", "arguments": {"command": COMMAND}}])


def llm(server: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)


def shell_app(home: Path, channel: ChatChannel, server: FakeLLMServer, **approvals):  # type: ignore[no-untyped-def]
    return build_app(home, channel, llm(server), agent={"tools": ["run_shell"], "approvals": approvals})


def finals(channel: ChatChannel, chat: str = "c1") -> list[str]:
    """The model's replies (whole messages such as command answers are finalized too)."""
    return [p.text for p in channel.finalized(chat) if p.text.startswith("result:")]


async def request_id(channel: ChatChannel, chat: str = "c1") -> str:
    await channel.wait_for(lambda: approval_id(channel.texts(chat)) is not None)
    found = approval_id(channel.texts(chat))
    assert found is not None
    return found


async def test_approve_runs_the_command(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.security")
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()
        async with shell_app(home, channel, server):
            await channel.say("build it")
            rid = await request_id(channel)
            request = next(t for t in channel.texts() if rid in t)
            assert "run_shell" in request and COMMAND in request and f"/deny {rid}" in request
            # Nothing ran before the answer.
            assert not (home / "workspace" / "proof.txt").exists()
            assert len(server.requests) == 1
            await channel.say(f"/approve {rid}")
            await channel.wait_for(lambda: len(finals(channel)) == 1)
            assert f"Approved {rid}: running run_shell." in channel.texts()
            assert finals(channel)[0].startswith("result: shell-ok")
            assert (home / "workspace" / "proof.txt").read_text() == "ran\n"
    assert f"approval {rid} for run_shell APPROVED by test:alice" in caplog.text


async def test_deny_keeps_the_command_from_running(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.security")
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()
        async with shell_app(home, channel, server):
            await channel.say("build it")
            rid = await request_id(channel)
            await channel.say(f"/deny {rid}")
            await channel.wait_for(lambda: len(finals(channel)) == 1)
            assert f"Denied {rid}: run_shell will not run." in channel.texts()
            assert "the user denied run_shell" in finals(channel)[0]
            assert not (home / "workspace" / "proof.txt").exists()
            # The model was told: the result it got is an error saying so.
            assert "denied" in server.requests[-1]["messages"][-1]["content"]
    assert f"approval {rid} for run_shell DENIED by test:alice" in caplog.text


async def test_no_answer_is_a_denial(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.security")
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()
        async with shell_app(home, channel, server, timeout=0.3):
            await channel.say("build it")
            rid = await request_id(channel)
            await channel.wait_for(lambda: len(finals(channel)) == 1)
            assert f"Approval {rid} expired: run_shell was not run." in channel.texts()
            assert "not approved in time" in finals(channel)[0]
            assert not (home / "workspace" / "proof.txt").exists()
            # A late answer finds nothing to approve.
            await channel.say(f"/approve {rid}")
            await channel.wait_for(lambda: f"No pending approval {rid}." in channel.texts())
            assert not (home / "workspace" / "proof.txt").exists()
    assert f"approval {rid} for run_shell expired" in caplog.text


async def test_someone_else_cannot_approve(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.security")
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()  # alice is an admin; bob is allowed but not an admin; mallory is unknown
        async with shell_app(home, channel, server):
            await channel.say("build it", user="bob", chat="group")
            rid = await request_id(channel, "group")
            await channel.say(f"/approve {rid}", user="mallory", chat="group")  # unknown: not even answered
            await channel.say(f"/approve {rid}", user="carl", chat="group")
            # Messages are handled in order: once bob's answer is in, the strangers' were refused before it.
            await channel.say(f"/approve {rid}", user="bob", chat="group")
            await channel.wait_for(lambda: len(finals(channel, "group")) == 1)
            texts = channel.texts("group")
            assert texts[1] == f"Approved {rid}: running run_shell." and len(texts) == 3, texts
    assert "APPROVED by test:bob" in caplog.text
    assert "test:mallory" not in caplog.text and "test:carl" not in caplog.text
    (home / "workspace" / "proof.txt").unlink()

    # A known user who is neither the requester nor an admin is refused.
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel(ChannelConfig(enabled=True, allow_from=["alice", "bob", "eve"], admins=["alice"]))
        async with shell_app(home, channel, server):
            await channel.say("build it", user="bob", chat="group")
            rid = await request_id(channel, "group")
            await channel.say(f"/approve {rid}", user="eve", chat="group")
            await channel.wait_for(
                lambda: "Only the person who asked, or an admin, can answer this request." in channel.texts("group")
            )
            assert not (home / "workspace" / "proof.txt").exists() and len(server.requests) == 1
            await channel.say(f"/deny {rid}", user="eve", chat="group")
            await channel.wait_for(
                lambda: (
                    channel.texts("group").count("Only the person who asked, or an admin, can answer this request.")
                    == 2
                )
            )
            # An admin may answer anyone's request.
            await channel.say(f"/approve {rid}", user="alice", chat="group")
            await channel.wait_for(lambda: len(finals(channel, "group")) == 1)
            assert finals(channel, "group")[0].startswith("result: shell-ok")
    assert "eve tried to approve it but is neither the requester nor an admin" in caplog.text
    assert "APPROVED by test:alice (admin)" in caplog.text


async def test_bare_approve_answers_the_only_request_here(home: Path) -> None:
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()
        async with shell_app(home, channel, server):
            await channel.say("/approve")
            await channel.wait_for(lambda: "Nothing is waiting for approval here." in channel.texts())
            await channel.say("build it")
            await request_id(channel)
            await channel.say("/approve")
            await channel.wait_for(lambda: len(finals(channel)) == 1)
            assert finals(channel)[0].startswith("result: shell-ok")


async def test_stop_while_waiting_for_approval(home: Path) -> None:
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()
        async with shell_app(home, channel, server) as app:
            await channel.say("build it")
            rid = await request_id(channel)
            await channel.say("/stop")
            await channel.wait_for(lambda: "Stopped." in channel.texts())
            await channel.wait_for(lambda: not app.protection.gate.pending)
            await channel.say(f"/approve {rid}")
            await channel.wait_for(lambda: f"No pending approval {rid}." in channel.texts())
            assert not (home / "workspace" / "proof.txt").exists()


async def test_configured_policy_allow_and_deny(home: Path) -> None:
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()
        async with shell_app(home, channel, server, allow=["run_shell"]):
            await channel.say("build it")
            await channel.wait_for(lambda: len(finals(channel)) == 1)
            assert finals(channel)[0].startswith("result: shell-ok")
            assert approval_id(channel.texts()) is None
    (home / "workspace" / "proof.txt").unlink()
    async with FakeLLMServer(responder=shell_responder) as server:
        channel = ChatChannel()
        async with shell_app(home, channel, server, deny=["run_*"], allow=["run_shell"]):
            await channel.say("build it")
            await channel.wait_for(lambda: len(finals(channel)) == 1)
            assert "not allowed by this agent's policy" in finals(channel)[0]
            assert not (home / "workspace" / "proof.txt").exists()


def test_verdicts() -> None:
    default = ApprovalsConfig()
    assert verdict_for(default, "read_file", "low") == "allow"
    assert verdict_for(default, "write_file", "medium") == "allow"
    assert verdict_for(default, "run_shell", "high") == "ask"
    assert verdict_for(default, "odd", "unheard-of") == "ask"  # an unknown risk is treated as high
    custom = ApprovalsConfig(allow=["run_shell"], ask=["write_*"], deny=["web_fetch"])
    assert verdict_for(custom, "run_shell", "high") == "allow"
    assert verdict_for(custom, "write_file", "medium") == "ask"
    assert verdict_for(custom, "web_fetch", "medium") == "deny"
