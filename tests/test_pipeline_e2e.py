"""End to end: test channel -> bus -> orchestrator -> agent -> real SDK -> fake LLM server -> gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from operator_use.agent.tools import Tool
from operator_use.messages import AIMessage, HumanMessage, ToolMessage
from operator_use.orchestrator.orchestrator import LLM_AUTH
from operator_use.providers.llm.anthropic import AnthropicLLM
from operator_use.providers.llm.fallback import FallbackLLM
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import ErrorTurn, FakeLLMServer, Reply
from .support.chat import ChatChannel
from .support.pipeline import Gates, TappedBus, make_app, scripted_responder


def openai_llm(server: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)


def anthropic_llm(server: FakeLLMServer) -> AnthropicLLM:
    return AnthropicLLM("fake-claude", "test-key", base_url=server.anthropic_base_url)


async def history(app, key: str = "test:c1") -> list:  # type: ignore[no-untyped-def]
    return (await app.sessions.load(key)).messages


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_plain_reply(home: Path, provider: str) -> None:
    async with FakeLLMServer([Reply(text="Hello there, how can I help?")]) as server:
        channel = ChatChannel()
        llm = openai_llm(server) if provider == "openai" else anthropic_llm(server)
        async with make_app(home, channel, llm) as app:
            await channel.say("hi")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            assert channel.texts() == ["Hello there, how can I help?"]
            assert channel.posted[0].reply_to == "in1"
            messages = await history(app)
            assert [m.role for m in messages] == ["human", "ai"]
            assert messages[1].usage is not None and messages[1].usage.output_tokens > 0


async def test_streamed_reply_arrives_as_deltas(home: Path) -> None:
    answer = "Streaming works: each piece of this sentence is a separate delta."
    async with FakeLLMServer([Reply(text=answer, chunk_size=4)]) as server:
        channel, bus = ChatChannel(), TappedBus()
        async with make_app(home, channel, openai_llm(server), bus=bus):
            await channel.say("stream please")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            deltas = bus.deltas()
            assert len(deltas) >= len(answer) // 4
            assert "".join(deltas) == answer
            # Deltas carry only new text, never the accumulated answer.
            assert max(len(d) for d in deltas) <= 4
            assert channel.texts() == [answer]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_two_parallel_tool_calls_in_one_turn(home: Path, provider: str) -> None:
    both_in = asyncio.Barrier(2)
    seen: list[str] = []

    class P(BaseModel):
        city: str

    async def weather(ctx, p: P) -> str:  # type: ignore[no-untyped-def]
        seen.append(p.city)
        # Only returns once both calls are in flight together: proves they run concurrently.
        await asyncio.wait_for(both_in.wait(), 10)
        return f"sunny in {p.city}"

    script = [
        Reply(
            text="Checking both.",
            tool_calls=[
                {"name": "weather", "arguments": {"city": "Paris"}},
                {"name": "weather", "arguments": {"city": "Oslo"}},
            ],
        ),
        Reply(text="Paris and Oslo are both sunny."),
    ]
    async with FakeLLMServer(script) as server:
        channel = ChatChannel()
        llm = openai_llm(server) if provider == "openai" else anthropic_llm(server)
        async with make_app(home, channel, llm, tools=[Tool("weather", "Weather of a city.", P, weather)]) as app:
            await channel.say("weather in Paris and Oslo?")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            assert sorted(seen) == ["Oslo", "Paris"]
            # Text written before the tool calls stays, the answer follows it.
            assert channel.texts() == ["Checking both.\n\nParis and Oslo are both sunny."]
            messages = await history(app)
            assert [m.role for m in messages] == ["human", "ai", "tool", "tool", "ai"]
            assert {m.content for m in messages if isinstance(m, ToolMessage)} == {"sunny in Paris", "sunny in Oslo"}
            assert messages[1].content == "Checking both."
            # The second request carried both results back to the model.
            assert len(server.requests) == 2


async def test_a_tool_that_raises_goes_back_to_the_model(home: Path) -> None:
    class P(BaseModel):
        pass

    def broken(ctx, p):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")

    script = [Reply(tool_calls=[{"name": "broken", "arguments": {}}]), Reply(text="The tool failed, sorry.")]
    async with FakeLLMServer(script) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server), tools=[Tool("broken", "Fails.", P, broken)]) as app:
            await channel.say("try the tool")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            assert channel.texts() == ["The tool failed, sorry."]
            tool_message = server.requests[1]["messages"][-1]
            assert tool_message["role"] == "tool" and "disk on fire" in tool_message["content"]
            results = [m for m in await history(app) if isinstance(m, ToolMessage)]
            assert results[0].is_error


async def test_max_iterations_reached(home: Path) -> None:
    class P(BaseModel):
        pass

    def again(ctx, p):  # type: ignore[no-untyped-def]
        return "again"

    loop_forever = lambda request: Reply(tool_calls=[{"name": "again", "arguments": {}}])  # noqa: E731
    async with FakeLLMServer(responder=loop_forever) as server:
        channel = ChatChannel()
        async with make_app(
            home, channel, openai_llm(server), tools=[Tool("again", "Again.", P, again)], max_iterations=3
        ) as app:
            await channel.say("loop")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            assert len(server.requests) == 3
            assert "max_iterations" in channel.texts()[0]
            messages = await history(app)
            # Every call the model made has its result: the history stays valid for the next turn.
            calls = [c.id for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
            results = [m.tool_call_id for m in messages if isinstance(m, ToolMessage)]
            assert calls == results and len(calls) == 3


@pytest.mark.parametrize("status", [529, 429])
async def test_fallback_to_the_next_model(home: Path, status: int) -> None:
    first_error = ErrorTurn(status=status, retry_after=30 if status == 429 else None)
    async with FakeLLMServer([first_error]) as bad, FakeLLMServer([Reply(text="from the backup")]) as good:
        channel = ChatChannel()
        llm = FallbackLLM([openai_llm(bad), anthropic_llm(good)])
        async with make_app(home, channel, llm):
            await channel.say("hello")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            assert channel.texts() == ["from the backup"]
            assert len(bad.requests) == 1 and len(good.requests) == 1


async def test_no_fallback_on_401(home: Path) -> None:
    async with FakeLLMServer([ErrorTurn(status=401)]) as bad, FakeLLMServer([Reply(text="never")]) as good:
        channel = ChatChannel()
        llm = FallbackLLM([anthropic_llm(bad), openai_llm(good)])
        async with make_app(home, channel, llm):
            await channel.say("hello")
            await channel.wait_for(lambda: len(channel.posted) == 1)
            assert channel.texts() == [LLM_AUTH]
            assert "test-key" not in channel.texts()[0]
            assert good.requests == []


# --- concurrency ------------------------------------------------------------------------------


async def test_chats_run_concurrently_and_a_chat_waits_for_its_own_turn(home: Path) -> None:
    gates = Gates()
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server), tools=[gates.tool()]) as app:
            await channel.say("block A", chat="c1")
            await channel.say("block B", chat="c2")
            # Both chats are inside their tool call at the same time.
            await gates.wait_entered("A", "B")
            await channel.say("second message", chat="c1")
            await channel.wait_for(lambda: app.orchestrator.lanes.queued("test:c1") == 1)
            requests_before = len(server.requests)
            gates.release["B"].set()
            await channel.wait_for(lambda: len(channel.finalized("c2")) == 1)
            # c1's second message is still waiting: no model call was made for it.
            assert app.orchestrator.lanes.queued("test:c1") == 1
            assert not any("second message" in str(r["messages"][-1]) for r in server.requests[requests_before:])
            gates.release["A"].set()
            await channel.wait_for(lambda: len(channel.finalized("c1")) == 2)
            assert channel.texts("c1") == ["done: gate A opened in chat c1", "You said: second message"]
            humans = [m.content for m in await history(app) if isinstance(m, HumanMessage)]
            assert humans == ["block A", "second message"]


async def test_tool_context_never_leaks_between_chats(home: Path) -> None:
    gates = Gates()
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server), tools=[gates.tool()]):
            await channel.say("block A", chat="chatA")
            await channel.say("block B", chat="chatB")
            await gates.wait_entered("A", "B")
            gates.release["B"].set()
            gates.release["A"].set()
            await channel.wait_for(
                lambda: len(channel.finalized("chatA")) == 1 and len(channel.finalized("chatB")) == 1
            )
            assert gates.seen["A"] == [("chatA", "chatA"), ("chatA", "chatA")]
            assert gates.seen["B"] == [("chatB", "chatB"), ("chatB", "chatB")]
            assert channel.texts("chatA") == ["done: gate A opened in chat chatA"]
            assert channel.texts("chatB") == ["done: gate B opened in chat chatB"]


async def test_stop_cancels_the_running_turn_and_the_chat_stays_usable(home: Path) -> None:
    gates = Gates()
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server), tools=[gates.tool()]) as app:
            await channel.say("block A")
            await gates.wait_entered("A")
            await channel.say("/stop")
            await channel.wait_for(lambda: "Stopped." in channel.texts())
            await channel.wait_for(lambda: "A" in gates.cancelled)
            await channel.say("are you there?")
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            assert channel.texts() == ["Stopped.", "You said: are you there?"]
            messages = await history(app)
            # The cancelled tool call left no dangling call in the history.
            assert not any(isinstance(m, AIMessage) and m.tool_calls for m in messages)
            assert [m.content for m in messages if isinstance(m, HumanMessage)] == ["block A", "are you there?"]
            # The last request the model got is well-formed: the next turn is not poisoned.
            assert server.requests[-1]["messages"][-1]["content"] == "are you there?"


async def test_bang_stop_and_nothing_to_stop(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)):
            await channel.say("!stop")
            await channel.wait_for(lambda: channel.texts() == ["Nothing to stop."])


# --- auth and commands ------------------------------------------------------------------------


async def test_unknown_sender_gets_nothing_and_cannot_restart(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)) as app:
            await channel.say("hello", user="mallory", chat="m")
            await channel.say("/restart", user="mallory", chat="m")
            await channel.say("/stop", user="mallory", chat="m")
            # A known user's message after them: once it is answered, the earlier ones were handled.
            await channel.say("hi", user="alice", chat="c1")
            await channel.wait_for(lambda: len(channel.finalized("c1")) == 1)
            assert channel.in_chat("m") == []
            assert not app.restart_requested
            assert len(server.requests) == 1


async def test_unknown_sender_gets_the_configured_rejection(home: Path) -> None:
    from operator_use.channels.base import ChannelConfig

    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel(ChannelConfig(enabled=True, allow_from=["alice"], rejection_message="Not for you."))
        async with make_app(home, channel, openai_llm(server)) as app:
            await channel.say("/restart", user="mallory", chat="m")
            await channel.wait_for(lambda: channel.texts("m") == ["Not for you."])
            assert not app.restart_requested and server.requests == []


async def test_restart_needs_the_admin_role(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)) as app:
            await channel.say("/restart", user="bob", chat="b")
            await channel.wait_for(lambda: channel.texts("b") == ["/restart is for admins only."])
            assert not app.restart_requested
            await channel.say("/restart@operator_bot", user="alice")
            await channel.wait_for(lambda: channel.texts() == ["Restarting..."])
            await asyncio.wait_for(app.wait_closed(), 10)
            assert app.restart_requested


async def test_commands_help_status_new_and_unknown(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)) as app:
            await channel.say("first")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            await channel.say("/help")
            await channel.wait_for(lambda: any("/new" in t for t in channel.texts()))
            await channel.say("/status")
            await channel.wait_for(lambda: any(t.startswith("Model:") for t in channel.texts()))
            status = next(t for t in channel.texts() if t.startswith("Model:"))
            assert "2 messages" in status and "test up" in status
            await channel.say("/frobnicate")
            await channel.wait_for(lambda: any("Unknown command /frobnicate" in t for t in channel.texts()))
            await channel.say("/new")
            await channel.wait_for(lambda: any(t.startswith("Started a new conversation") for t in channel.texts()))
            assert await history(app) == []
            assert len(list((home / "sessions" / "archive").glob("*.jsonl"))) == 1
            # Commands never reached the model.
            assert len(server.requests) == 1


async def test_history_is_used_on_the_next_turn(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)):
            await channel.say("my name is Ada")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            await channel.say("what is my name?")
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            contents = [m.get("content") for m in server.requests[1]["messages"]]
            assert "my name is Ada" in contents and "You said: my name is Ada" in contents
            assert server.requests[1]["messages"][0]["role"] == "system"


async def test_a_crashed_llm_call_gets_a_clear_error_and_the_chat_carries_on(home: Path) -> None:
    async with FakeLLMServer([ErrorTurn(status=500)], responder=scripted_responder) as server:
        channel = ChatChannel()
        async with make_app(home, channel, openai_llm(server)):
            await channel.say("hello")
            await channel.wait_for(lambda: len(channel.posted) == 1)
            assert "unavailable" in channel.texts()[0]
            await channel.say("again")
            await channel.wait_for(lambda: "You said: again" in channel.texts())
