"""Conversations at the edges, end to end (test channel -> orchestrator -> agent -> fake LLM -> gateway):
a full disk, broken UTF-16 (from the user, the model or a file name), keys too long for a file name, commands
that are not addressed to us, a second agent on the same data home, a model stream that breaks off, an empty
reply."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from operator_use.agent.tools import Tool
from operator_use.agent.turn import TurnContext
from operator_use.homelock import HomeInUse
from operator_use.messages import AIMessage, HumanMessage, ToolMessage
from operator_use.providers.llm.anthropic import AnthropicLLM
from operator_use.providers.llm.base import LLM
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.session.store import SessionStore
from operator_use.tools.filesystem import filesystem_tools

from .fakes.llm_server import ErrorTurn, FakeLLMServer, FakeRequest, Reply
from .support.chat import ChatChannel
from .support.deps import require_module
from .support.disk import tiny_tmpfs
from .support.pipeline import make_app, scripted_responder


def openai_llm(server: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)


def sdk_llm(provider: str, server: FakeLLMServer, timeout: float = 60.0) -> LLM:
    if provider == "openai":
        return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url, timeout=timeout)
    return AnthropicLLM("fake-claude", "test-key", base_url=server.anthropic_base_url, timeout=timeout)


DROPPED = "The connection to the model dropped; the reply was cut off."
UNAVAILABLE = "The model is unavailable right now (connection). Please try again in a moment."


def contents(messages: list) -> list[str]:  # type: ignore[type-arg]
    return [m.content for m in messages]


def replied(channel: ChatChannel, text: str, chat: str = "c1") -> Callable[[], bool]:
    """The reply `text` is complete: finalized once its turn ended, so after its history was written."""
    return lambda: any(p.text == text and p.finalized for p in channel.in_chat(chat))


async def test_a_full_disk_loses_only_the_turn_it_interrupted(tmp_path: Path) -> None:
    def responder(request: FakeRequest) -> Reply:
        text = request.last_user_text()
        return Reply(text=f"You said: {text}" if len(text) < 100 else "That is long.", chunk_size=3)

    with tiny_tmpfs(tmp_path / "home", size="1m") as disk:
        home = disk.root
        async with FakeLLMServer(responder=responder) as server:
            channel = ChatChannel()
            async with make_app(home, channel, openai_llm(server)) as app:
                await channel.say("one")
                await channel.wait_for(replied(channel, "You said: one"))
                with disk.full():
                    # Bigger than what is left of the history file's last page: written in part, then refused.
                    await channel.say("two " * 1500)
                    await channel.wait_for(lambda: any("could not be saved" in t for t in channel.texts()))
                await channel.say("three")
                await channel.wait_for(replied(channel, "You said: three"))
                expected = ["one", "You said: one", "three", "You said: three"]
                assert contents((await app.sessions.load("test:c1")).messages) == expected
                # The next turn's model was not shown the exchange the history lost either.
                assert "two two" not in str(server.requests[-1]["messages"])
            refusal = "This conversation could not be saved (the disk is full), so this exchange will be forgotten."
            assert channel.texts() == ["You said: one", "That is long.", refusal, "You said: three"]
            assert contents(SessionStore(home).read_sync("test:c1")) == expected


async def test_broken_utf16_from_the_user_or_the_model_is_answered_and_saved(home: Path) -> None:
    def responder(request: FakeRequest) -> Reply:
        return Reply(text=f"You said: {request.last_user_text()} \ud83d", chunk_size=3)

    async with FakeLLMServer(responder=responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)):
            await channel.say("caf\udce9 \ud83d\ude00 ok")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
    saved = SessionStore(home).read_sync("test:c1")
    assert [type(m) for m in saved] == [HumanMessage, AIMessage]
    # Lone surrogates became U+FFFD; a proper pair stayed the character it encodes.
    assert saved[0].content == "caf\ufffd \U0001f600 ok"
    assert server.requests[0]["messages"][-1]["content"] == saved[0].content, "the model read what was saved"
    assert channel.texts() == [saved[1].content] == ["You said: caf\ufffd \U0001f600 ok \ufffd"]


async def test_a_conversation_key_too_long_for_a_file_name_is_answered_and_kept(home: Path) -> None:
    chat = "c" * 200 + "é" * 100  # the key, percent-encoded, is about 800 bytes
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)) as app:
            await channel.say("hello", chat=chat)
            await channel.wait_for(replied(channel, "You said: hello", chat))
            await channel.say("again", chat=chat)
            await channel.wait_for(replied(channel, "You said: again", chat))
            await channel.say("/new", chat=chat)
            await channel.wait_for(lambda: "The previous one was archived." in channel.texts(chat)[-1])
            assert (await app.sessions.load("test:" + chat)).messages == []
            await channel.say("fresh", chat=chat)
            await channel.wait_for(replied(channel, "You said: fresh", chat))
            assert contents((await app.sessions.load("test:" + chat)).messages) == ["fresh", "You said: fresh"]
    store = SessionStore(home)
    assert [s.key for s in store.list_sessions()] == ["test:" + chat]  # what `sessions list` prints
    assert contents(store.read_sync("test:" + chat)) == ["fresh", "You said: fresh"]  # `sessions show`


async def test_a_command_after_a_space_is_text_and_not_run(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)) as app:
            await channel.say("remember this")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            await channel.say(" /new@otherbot")
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            assert channel.texts()[1] == "You said:  /new@otherbot"
            history = contents((await app.sessions.load("test:c1")).messages)
    assert history == ["remember this", "You said: remember this", " /new@otherbot", "You said:  /new@otherbot"]


async def test_telegram_commands_for_another_bot_never_run_here(home: Path) -> None:
    require_module("telegram")
    from operator_use.channels.telegram.channel import TelegramChannel
    from operator_use.channels.telegram.config import TelegramConfig

    from .fakes.telegram_server import TOKEN, FakeTelegram

    async with FakeTelegram() as fake, FakeLLMServer(responder=scripted_responder) as server:
        channel = TelegramChannel(
            TelegramConfig(
                enabled=True,
                token=TOKEN,
                base_url=fake.base_url,
                base_file_url=fake.base_file_url,
                allow_from=["111"],
                edit_interval=0.05,
                poll_timeout=5,
            ),
            workspace=home / "workspace",
        )
        alice = fake.user(111, "alice")
        chat = fake.private_chat(alice)

        def replies() -> list[str]:
            return [m.text for m in fake.messages_in(111)]

        def prompt(i: int) -> str:
            return str(server.requests[i]["messages"])

        async with make_app(home, channel, openai_llm(server)):
            fake.send_text(chat, alice, "remember this")
            await fake.wait_for(lambda: "You said: remember this" in replies())
            fake.send_text(chat, alice, "/new@another_bot")  # dropped: not ours
            fake.send_text(chat, alice, " /new@another_bot")  # not a command at all: a message
            fake.send_text(chat, alice, "what came first?")
            await fake.wait_for(lambda: "You said: what came first?" in replies())
            # Each turn starts once the one before it is saved: the history carried on, nothing archived.
            assert len(server.requests) == 3 and "remember this" in prompt(2) and "/new@another_bot" in prompt(2)
            fake.send_text(chat, alice, "/new@operator_test_bot")
            await fake.wait_for(lambda: any(r.startswith("Started a new conversation.") for r in replies()))
            fake.send_text(chat, alice, "after")
            await fake.wait_for(lambda: "You said: after" in replies())
            assert "remember this" not in prompt(3)
        assert sum(r.startswith("Started a new conversation.") for r in replies()) == 1


async def test_a_second_app_on_the_same_home_is_refused_until_the_first_stops(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        first = make_app(home, ChatChannel(), openai_llm(server))
        second = make_app(home, ChatChannel(), openai_llm(server))
        async with first:
            with pytest.raises(HomeInUse) as refused:
                await second.start()
            message = str(refused.value)
            assert refused.value.pid == os.getpid()
            assert f"(pid {os.getpid()})" in message and str(home) in message and "OPERATOR_HOME" in message
            await second.stop()
        async with second:
            channel = second.channels[0]
            assert isinstance(channel, ChatChannel)
            await channel.say("hi")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
        await asyncio.to_thread(first.home_lock.acquire)  # free again once the second stopped
        first.home_lock.release()


async def test_an_unreadable_history_gets_a_reply_and_other_chats_go_on(tmp_path: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(tmp_path, channel, openai_llm(server)) as app:
            # A directory where the history file should be: every read of it fails with a real OSError.
            app.sessions.path_for("test:c1").mkdir(parents=True)
            await channel.say("hello")
            await channel.wait_for(lambda: any("history could not be read" in t for t in channel.texts()))
            await channel.say("hi", chat="c2")
            await channel.wait_for(replied(channel, "You said: hi", chat="c2"))
            assert server.requests and all("hello" not in str(r["messages"]) for r in server.requests)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_file_name_that_is_not_utf8_reaches_the_model_as_replacement_characters(
    home: Path, provider: str
) -> None:
    workspace = home / "workspace"
    workspace.mkdir()
    # Python lists this name as "caf\udce9.txt": a lone surrogate, which no UTF-8 request body can carry.
    os.close(os.open(os.fsencode(workspace) + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY, 0o600))
    script = [
        Reply(
            tool_calls=[
                # The model's JSON can spell a lone surrogate too.
                {"name": "read_file", "arguments": '{"path": "caf\\udce9.txt"}', "id": "c1"},
                {"name": "list_files", "arguments": {"path": "."}, "id": "c2"},
            ]
        )
    ]
    async with FakeLLMServer(script, responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, sdk_llm(provider, server), tools=filesystem_tools()) as app:
            await channel.say("list my files")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            saved = (await app.sessions.load("test:c1")).messages
    listing = next(m.content for m in saved if isinstance(m, ToolMessage) and m.name == "list_files")
    assert "caf\ufffd.txt  0 B" in listing.splitlines()
    assert channel.texts() == [f"done: {listing}"], "answered from the listing, not with an error"
    assert saved[1].tool_calls[0].arguments == {"path": "caf\ufffd.txt"}
    # The model was sent what the history keeps.
    sent = json.dumps(server.requests[1], ensure_ascii=False)
    assert json.dumps(listing, ensure_ascii=False)[1:-1] in sent and "caf\ufffd.txt" in sent
    assert [type(m) for m in SessionStore(home).read_sync("test:c1")] == [
        HumanMessage,
        AIMessage,
        ToolMessage,
        ToolMessage,
        AIMessage,
    ]


@pytest.mark.parametrize("how", ["eof", "reset"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_reply_whose_stream_breaks_off_keeps_its_text_with_a_note(home: Path, provider: str, how: str) -> None:
    async with FakeLLMServer([Reply(text="Half an answer", unfinished=how)], responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, sdk_llm(provider, server)) as app:
            await channel.say("tell me")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            cut = f"Half an answer\n\n{DROPPED}"
            assert channel.texts() == [cut]
            assert contents((await app.sessions.load("test:c1")).messages) == ["tell me", cut]
            await channel.say("go on")
            await channel.wait_for(replied(channel, "You said: go on"))


@pytest.mark.parametrize(
    ("error", "note"),
    [
        (ErrorTurn(status=200, type="overloaded_error"), "The model became overloaded; the reply was cut off."),
        (ErrorTurn(status=500), "The model failed part-way; the reply was cut off."),
    ],
    ids=["overloaded", "server-error"],
)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_error_event_after_some_text_keeps_the_text_with_a_note(
    home: Path, provider: str, error: ErrorTurn, note: str
) -> None:
    error = ErrorTurn(status=error.status, type=error.type, after_text="Half an answer")
    async with FakeLLMServer([error], responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, sdk_llm(provider, server)) as app:
            await channel.say("tell me")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            cut = f"Half an answer\n\n{note}"
            # Not "The model is unavailable right now": the text shown stays, and so does the history.
            assert channel.texts() == [cut]
            assert contents((await app.sessions.load("test:c1")).messages) == ["tell me", cut]
            await channel.say("go on")
            await channel.wait_for(replied(channel, "You said: go on"))


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_read_timeout_after_some_text_keeps_the_text_with_a_note(home: Path, provider: str) -> None:
    # The server stalls after "Half an" (the gate is only opened to let it finish), past the SDK's timeout.
    stall = asyncio.Event()
    script = [Reply(text="Half an answer", chunk_size=7, gate=stall)]
    async with FakeLLMServer(script, responder=scripted_responder) as server:
        channel = ChatChannel()
        try:
            async with make_app(home, channel, sdk_llm(provider, server, timeout=0.5)) as app:
                await channel.say("tell me")
                await channel.wait_for(lambda: len(channel.finalized()) == 1)
                cut = "Half an\n\nThe model stopped responding; the reply was cut off."
                assert channel.texts() == [cut]
                assert contents((await app.sessions.load("test:c1")).messages) == ["tell me", cut]
                await channel.say("go on")
                await channel.wait_for(replied(channel, "You said: go on"))
        finally:
            stall.set()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_error_event_before_any_text_still_says_the_model_is_unavailable(home: Path, provider: str) -> None:
    async with FakeLLMServer([ErrorTurn(status=200, type="overloaded_error", after_text="")]) as server:
        channel = ChatChannel()
        async with make_app(home, channel, sdk_llm(provider, server)) as app:
            await channel.say("tell me")
            unavailable = "The model is unavailable right now (overloaded). Please try again in a moment."
            await channel.wait_for(lambda: channel.texts() == [unavailable])
            assert contents((await app.sessions.load("test:c1")).messages) == ["tell me"]


@pytest.mark.parametrize("how", ["eof", "reset"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_stream_that_breaks_off_before_any_text_gets_a_reply_and_runs_no_tool(
    home: Path, provider: str, how: str
) -> None:
    class NoteParams(BaseModel):
        text: str

    noted: list[str] = []

    async def note(ctx: TurnContext, params: NoteParams) -> str:
        noted.append(params.text)
        return "noted"

    # The call is complete on the wire (Anthropic even closed its block); only the reply's finish is missing.
    script = [Reply(tool_calls=[{"name": "note", "arguments": {"text": "half"}}], unfinished=how)]
    async with FakeLLMServer(script, responder=scripted_responder) as server:
        channel = ChatChannel()
        tools = [Tool("note", "Take a note.", NoteParams, note)]
        async with make_app(home, channel, sdk_llm(provider, server), tools=tools) as app:
            await channel.say("note something")
            await channel.wait_for(lambda: channel.texts() == [UNAVAILABLE])
            assert contents((await app.sessions.load("test:c1")).messages) == ["note something"]
            # The next request is well-formed (Anthropic merges the two user messages into one).
            await channel.say("hello")
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            assert channel.texts()[-1].startswith("You said: ") and channel.texts()[-1].endswith("hello")
    assert noted == []


@pytest.mark.parametrize(
    ("finish", "note"),
    [
        (None, "The model sent back an empty reply. Please try again."),
        ("length", "The model used up its output tokens (llm.max_tokens) before writing a reply."),
    ],
)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_empty_reply_gets_a_note_instead_of_silence(
    home: Path, provider: str, finish: str | None, note: str
) -> None:
    async with FakeLLMServer([Reply(text="", finish_reason=finish)], responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, sdk_llm(provider, server)) as app:
            await channel.say("hello?")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            assert channel.texts() == [note]
            saved = (await app.sessions.load("test:c1")).messages
            assert contents(saved) == ["hello?", note], "the history holds what the user saw, not an empty answer"
            await channel.say("again")
            await channel.wait_for(replied(channel, "You said: again"))
