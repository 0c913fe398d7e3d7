"""Stream limits on LLM calls (llm.call_deadline, llm.idle_timeout, llm.max_output_chars), through the real
SDKs against the fake server: a stream that never ends is cut off, its HTTP stream closed, the text already
shown kept with a note saying why, and the conversation's slot freed for the next turn."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from operator_use.app import App
from operator_use.config import LLMConfig, load_config
from operator_use.messages import AIMessage, HumanMessage, SystemMessage
from operator_use.providers.llm.anthropic import AnthropicLLM
from operator_use.providers.llm.base import LLM, ServerError, TextChunk, ToolCallChunk, ToolSchema
from operator_use.providers.llm.fallback import FallbackLLM
from operator_use.providers.llm.limits import (
    BrokenOff,
    DeadlineExceeded,
    IdleTimeout,
    LimitedLLM,
    OutputLimitExceeded,
    StreamCutOff,
    StreamLimits,
    TooManyToolCalls,
    with_limits,
)
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.providers.llm.setup import stream_limits

from .fakes.llm_server import Endless, ErrorTurn, FakeLLMServer, Reply
from .support.chat import ChatChannel
from .support.pipeline import TappedBus, scripted_responder

PROMPT = [SystemMessage(content="You are terse."), HumanMessage(content="hello")]
WRITE = [ToolSchema("write", "Write text", {"type": "object", "properties": {"text": {"type": "string"}}})]
OFF = StreamLimits(call_deadline=None, idle_timeout=None, max_output_chars=None)


def make(kind: str, server: FakeLLMServer) -> LLM:
    if kind == "openai":
        return OpenAILLM("fake-model", "sk-test", base_url=server.openai_base_url)
    return AnthropicLLM("fake-model", "sk-ant-test", base_url=server.anthropic_base_url)


@pytest.fixture(params=["openai", "anthropic"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def run(llm: LLM, tools: list[ToolSchema] | None = None) -> tuple[list, StreamCutOff | None]:
    chunks: list = []
    try:
        async for chunk in llm.stream(PROMPT, tools or []):
            chunks.append(chunk)
    except StreamCutOff as exc:
        return chunks, exc
    return chunks, None


def text(chunks: list) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextChunk))


# --- one call, each limit, both SDKs ------------------------------------------------------------


async def test_keep_alives_without_tokens_hit_the_idle_timeout(kind: str) -> None:
    async with FakeLLMServer([Endless(keepalive=True, interval=0.05)]) as server:
        inner = make(kind, server)
        llm = LimitedLLM(inner, StreamLimits(call_deadline=None, idle_timeout=0.5, max_output_chars=None))
        try:
            chunks, cut = await run(llm)
            # The HTTP stream was closed, not left running: the server saw the client hang up.
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert chunks == []
    assert isinstance(cut, IdleTimeout) and cut.retryable
    assert cut.user_message == "The model sent nothing for 0.5 s, so I stopped waiting. Please try again."
    assert "llm.idle_timeout" in str(cut)


async def test_idle_after_some_text_says_the_reply_was_cut_off(kind: str) -> None:
    async with FakeLLMServer([Endless(text="Half an ans", keepalive=True, interval=0.05)]) as server:
        llm = LimitedLLM(make(kind, server), StreamLimits(call_deadline=None, idle_timeout=0.5))
        try:
            chunks, cut = await run(llm)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert text(chunks) == "Half an ans"
    assert isinstance(cut, IdleTimeout)
    assert cut.user_message == "The model stopped sending for 0.5 s; the reply was cut off."


async def test_slow_endless_tokens_hit_the_call_deadline(kind: str) -> None:
    async with FakeLLMServer([Endless(piece="la ", interval=0.05)]) as server:
        llm = LimitedLLM(make(kind, server), StreamLimits(call_deadline=1.0, idle_timeout=None, max_output_chars=None))
        try:
            chunks, cut = await run(llm)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert isinstance(cut, DeadlineExceeded) and not cut.retryable
    assert text(chunks).startswith("la la ")
    assert cut.user_message == "The reply took longer than 1 s and was cut off."


async def test_fast_endless_tokens_hit_the_output_cap(kind: str) -> None:
    async with FakeLLMServer([Endless(piece="abcdefg ", interval=0)]) as server:
        llm = LimitedLLM(make(kind, server), StreamLimits(call_deadline=None, idle_timeout=None, max_output_chars=2000))
        try:
            chunks, cut = await run(llm)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert isinstance(cut, OutputLimitExceeded) and not cut.retryable
    # Exactly up to the cap: the chunk that crossed it was cut, not dropped.
    assert len(text(chunks)) == 2000
    assert cut.user_message == "The reply grew past 2,000 characters and was cut off."


async def test_endless_tool_call_arguments_count_against_the_cap(kind: str) -> None:
    async with FakeLLMServer([Endless(tool_call="write", piece="xxxxxxxx", interval=0)]) as server:
        llm = LimitedLLM(make(kind, server), StreamLimits(call_deadline=None, idle_timeout=None, max_output_chars=2000))
        try:
            chunks, cut = await run(llm, WRITE)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert isinstance(cut, OutputLimitExceeded)
    assert not any(isinstance(c, ToolCallChunk) for c in chunks)


async def test_endless_tool_calls_with_empty_arguments_count_against_the_cap(kind: str) -> None:
    # Each call costs its bookkeeping even without arguments; the deadline only guards against a hang.
    async with FakeLLMServer([Endless(tool_call="write", new_calls=True, piece="", interval=0)]) as server:
        llm = LimitedLLM(
            make(kind, server),
            StreamLimits(call_deadline=10, idle_timeout=None, max_output_chars=2000, max_tool_calls=None),
        )
        try:
            chunks, cut = await run(llm, WRITE)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert isinstance(cut, OutputLimitExceeded)
    assert chunks == []


async def test_endless_tool_calls_hit_the_tool_call_cap(kind: str) -> None:
    async with FakeLLMServer([Endless(tool_call="write", new_calls=True, piece='{"text": "x"}', interval=0)]) as server:
        llm = LimitedLLM(
            make(kind, server),
            StreamLimits(call_deadline=10, idle_timeout=None, max_output_chars=None, max_tool_calls=10),
        )
        try:
            chunks, cut = await run(llm, WRITE)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert isinstance(cut, TooManyToolCalls) and not cut.retryable
    assert cut.user_message == "The reply asked for more than 10 tool calls at once and was cut off."
    assert "llm.max_tool_calls" in str(cut) and chunks == []


async def test_empty_tool_call_deltas_are_not_progress(kind: str) -> None:
    # A call starts, then only empty argument deltas arrive, well within the idle timeout of each other.
    async with FakeLLMServer([Endless(tool_call="write", piece="", interval=0.05)]) as server:
        llm = LimitedLLM(make(kind, server), StreamLimits(call_deadline=10, idle_timeout=0.5))
        try:
            _, cut = await run(llm, WRITE)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
        finally:
            await llm.aclose()
    assert isinstance(cut, IdleTimeout), cut
    assert cut.user_message == "The model stopped sending for 0.5 s; the reply was cut off."


async def test_tool_call_arguments_streaming_slowly_are_progress(kind: str) -> None:
    # Every gap is well under the idle timeout, the whole call well over it: only the gaps count.
    args = {"text": "x" * 30}  # 42 characters of JSON in 11 pieces, 0.08 s apart
    server_reply = Reply(
        tool_calls=[{"name": "write", "arguments": args, "id": "c1"}], chunk_size=4, delay_per_chunk=0.08
    )
    async with FakeLLMServer([server_reply]) as server:
        llm = LimitedLLM(make(kind, server), StreamLimits(call_deadline=None, idle_timeout=0.5))
        try:
            chunks, cut = await run(llm, WRITE)
        finally:
            await llm.aclose()
    assert cut is None
    (call,) = [c.call for c in chunks if isinstance(c, ToolCallChunk)]
    assert call.arguments == args


async def test_a_normal_reply_passes_untouched(kind: str) -> None:
    async with FakeLLMServer([Reply(text="Short and sweet.", chunk_size=3)]) as server:
        plain, limited = make(kind, server), LimitedLLM(make(kind, server), StreamLimits())
        server.push(Reply(text="Short and sweet.", chunk_size=3))
        try:
            expected, _ = await run(plain)
            chunks, cut = await run(limited)
        finally:
            await plain.aclose()
            await limited.aclose()
    assert cut is None and chunks == expected
    assert limited.label == plain.label


# --- the fallback chain -------------------------------------------------------------------------


async def test_idle_before_any_output_falls_back_to_the_next_model() -> None:
    async with (
        FakeLLMServer([Endless(keepalive=True)]) as stuck,
        FakeLLMServer([Reply(text="from the backup")]) as good,
    ):
        chain = with_limits(
            FallbackLLM([make("openai", stuck), make("anthropic", good)]),
            StreamLimits(call_deadline=None, idle_timeout=0.5),
        )
        try:
            chunks, cut = await run(chain)
            await asyncio.wait_for(stuck.wait_streams_closed(), 10)
        finally:
            await chain.aclose()
    assert cut is None and text(chunks) == "from the backup"
    assert isinstance(chain, FallbackLLM) and chain.last_model == "anthropic/fake-model"


async def test_idle_after_text_does_not_fall_back() -> None:
    async with (
        FakeLLMServer([Endless(text="Started", keepalive=True)]) as stuck,
        FakeLLMServer([Reply(text="never")]) as good,
    ):
        chain = with_limits(
            FallbackLLM([make("anthropic", stuck), make("openai", good)]),
            StreamLimits(call_deadline=None, idle_timeout=0.5),
        )
        try:
            chunks, cut = await run(chain)
        finally:
            await chain.aclose()
    assert text(chunks) == "Started" and isinstance(cut, IdleTimeout)
    assert good.requests == []


async def test_a_server_error_after_text_is_a_cut_off_and_does_not_fall_back() -> None:
    async with (
        FakeLLMServer([ErrorTurn(status=500, after_text="Started")]) as failing,
        FakeLLMServer([Reply(text="never")]) as good,
    ):
        chain = with_limits(FallbackLLM([make("openai", failing), make("anthropic", good)]), OFF)
        try:
            chunks, cut = await run(chain)
        finally:
            await chain.aclose()
    assert text(chunks) == "Started"
    assert isinstance(cut, BrokenOff) and isinstance(cut.__cause__, ServerError)
    assert cut.user_message == "The model failed part-way; the reply was cut off."
    assert good.requests == []


async def test_a_server_error_before_any_text_still_falls_back() -> None:
    async with (
        FakeLLMServer([ErrorTurn(status=200, type="overloaded_error", after_text="")]) as failing,
        FakeLLMServer([Reply(text="from the backup")]) as good,
    ):
        chain = with_limits(FallbackLLM([make("anthropic", failing), make("openai", good)]), OFF)
        try:
            chunks, cut = await run(chain)
        finally:
            await chain.aclose()
    assert cut is None and text(chunks) == "from the backup"


def test_with_limits_wraps_each_model_once() -> None:
    a, b = OpenAILLM("a", "k", base_url="http://127.0.0.1:9/v1"), OpenAILLM("b", "k", base_url="http://127.0.0.1:9/v1")
    chain = FallbackLLM([a, b])
    assert with_limits(chain, OFF) is chain
    assert [type(m) for m in chain.llms] == [LimitedLLM, LimitedLLM]
    assert [m.inner for m in chain.llms] == [a, b]  # type: ignore[attr-defined]
    wrapped = chain.llms[0]
    with_limits(chain, StreamLimits())
    assert chain.llms[0] is wrapped
    assert with_limits(wrapped, StreamLimits()) is wrapped


def test_config_keys_become_the_limits() -> None:
    assert stream_limits(LLMConfig()) == StreamLimits(
        call_deadline=600.0, idle_timeout=120.0, max_output_chars=100_000, max_tool_calls=64
    )
    config = LLMConfig(call_deadline=30, idle_timeout=0, max_output_chars=5000, max_tool_calls=0)
    assert stream_limits(config) == StreamLimits(
        call_deadline=30.0, idle_timeout=None, max_output_chars=5000, max_tool_calls=None
    )
    with pytest.raises(ValueError):
        LLMConfig(idle_timeout=-1)


def test_limits_from_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_LLM__IDLE_TIMEOUT", "45")
    monkeypatch.setenv("OPERATOR_LLM__MAX_OUTPUT_CHARS", "0")
    limits = stream_limits(load_config().llm)
    assert limits.idle_timeout == 45.0 and limits.max_output_chars is None and limits.call_deadline == 600.0


# --- through the whole pipeline ----------------------------------------------------------------


def limited_app(home: Path, channel: ChatChannel, llm: LLM, **limits: object) -> App:
    config = load_config(
        home=home,
        agent={"workspace": home / "workspace", "max_concurrent_turns": 1},
        llm={"call_deadline": 0, "idle_timeout": 0, "max_output_chars": 0, **limits},
    )
    return App(config, channels=[channel], llm=llm, tools=[], bus=TappedBus())


async def history(app: App, key: str = "test:c1") -> list:
    return (await app.sessions.load(key)).messages


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_stuck_stream_is_cut_off_and_frees_the_only_slot(home: Path, provider: str) -> None:
    async with FakeLLMServer([Endless(text="Partial answer", keepalive=True)], responder=scripted_responder) as server:
        channel = ChatChannel()
        async with limited_app(home, channel, make(provider, server), idle_timeout=0.5) as app:
            await channel.say("tell me everything", chat="c1")
            await server.wait_for_requests(1)
            # One slot in all: this chat's turn can only start once the stuck one has let go of it.
            await channel.say("are you there?", chat="c2")
            await channel.wait_for(lambda: len(channel.finalized("c1")) == 1 and len(channel.finalized("c2")) == 1)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
            note = "The model stopped sending for 0.5 s; the reply was cut off."
            assert channel.texts("c1") == [f"Partial answer\n\n{note}"]
            assert channel.texts("c2") == ["You said: are you there?"]
            messages = await history(app)
            assert [m.role for m in messages] == ["human", "ai"]
            assert messages[1].content == f"Partial answer\n\n{note}"


async def test_an_endless_tool_call_is_dropped_and_the_history_stays_valid(home: Path) -> None:
    script = [Endless(text="Writing it.", tool_call="write", piece="yyyy", interval=0)]
    async with FakeLLMServer(script, responder=scripted_responder) as server:
        channel = ChatChannel()
        async with limited_app(home, channel, make("anthropic", server), max_output_chars=3000) as app:
            await channel.say("write a long file")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            assert channel.texts() == ["Writing it.\n\nThe reply grew past 3,000 characters and was cut off."]
            messages = await history(app)
            assert not any(isinstance(m, AIMessage) and m.tool_calls for m in messages)
            # The next turn goes out well-formed: the cut-off reply is plain assistant text.
            await channel.say("never mind")
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            assistant = server.requests[-1]["messages"][-2]
            assert assistant["role"] == "assistant"
            assert [b["type"] for b in assistant["content"]] == ["text"]
            assert channel.texts()[-1] == "You said: never mind"


async def test_a_reply_that_never_ends_hits_the_deadline(home: Path) -> None:
    async with FakeLLMServer([Endless(piece="more ", interval=0.05)], responder=scripted_responder) as server:
        channel = ChatChannel()
        async with limited_app(home, channel, make("openai", server), call_deadline=1.0) as app:
            await channel.say("go on forever")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)
            await asyncio.wait_for(server.wait_streams_closed(), 10)
            reply = channel.texts()[0]
            assert reply.startswith("more more ")
            assert reply.endswith("\n\nThe reply took longer than 1 s and was cut off.")
            messages = await history(app)
            assert [m.role for m in messages] == ["human", "ai"] and messages[1].content == reply
