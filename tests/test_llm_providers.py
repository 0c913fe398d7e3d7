"""LLM providers through the real SDKs against the fake server, the fallback chain, detection and presets."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from pydantic import SecretStr

from operator_use.messages import AIMessage, HumanMessage, ImagePart, SystemMessage, ToolCall, ToolMessage, Usage
from operator_use.providers.llm.anthropic import AnthropicLLM
from operator_use.providers.llm.base import (
    LLM,
    AuthError,
    BadRequestError,
    ConnectionDropped,
    ConnectionError_,
    FinishChunk,
    LLMChunk,
    OverloadedError,
    RateLimitError,
    ServerError,
    TextChunk,
    TimeoutError_,
    ToolCallChunk,
    ToolSchema,
    UsageChunk,
)
from operator_use.providers.llm.detect import Detection, detect_llm, explain_no_llm, probe_models
from operator_use.providers.llm.fallback import FallbackLLM
from operator_use.providers.llm.limits import StreamLimits, with_limits
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.providers.llm.presets import LOCAL_KEY, PRESETS, make_llm
from tests.fakes.llm_server import ErrorTurn, FakeLLMServer, Reply

PROMPT = [SystemMessage(content="You are terse."), HumanMessage(content="hello")]
TOOLS = [
    ToolSchema("read_file", "Read a file", {"type": "object", "properties": {"path": {"type": "string"}}}),
    ToolSchema("shell", "Run a command", {"type": "object", "properties": {"cmd": {"type": "string"}}}),
]


def make(kind: str, server: FakeLLMServer, **kw: object) -> LLM:
    if kind == "openai":
        return OpenAILLM("fake-model", "sk-test", base_url=server.openai_base_url, **kw)  # type: ignore[arg-type]
    return AnthropicLLM("fake-model", "sk-ant-test", base_url=server.anthropic_base_url, **kw)  # type: ignore[arg-type]


async def collect(llm: LLM, messages: Sequence = PROMPT, tools: Sequence[ToolSchema] = ()) -> list[LLMChunk]:
    return [chunk async for chunk in llm.stream(messages, tools)]


def text_of(chunks: list[LLMChunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextChunk))


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as s:
        yield s


@pytest.fixture(params=["openai", "anthropic"])
async def llm_kind(request: pytest.FixtureRequest) -> str:
    return request.param


# --- providers through the SDKs ---------------------------------------------------------------


async def test_plain_reply_streams_several_text_chunks(server: FakeLLMServer, llm_kind: str) -> None:
    server.push(Reply(text="Hello from the fake model.", chunk_size=5))
    llm = make(llm_kind, server)
    try:
        chunks = await collect(llm)
    finally:
        await llm.aclose()
    texts = [c for c in chunks if isinstance(c, TextChunk)]
    assert text_of(chunks) == "Hello from the fake model."
    assert len(texts) >= 5
    assert isinstance(chunks[-1], FinishChunk) and chunks[-1].reason == "stop"
    assert not any(isinstance(c, ToolCallChunk) for c in chunks)
    assert server.requests[0]["model"] == "fake-model"
    assert server.requests[0]["stream"] is True


async def test_two_tool_calls_and_usage(server: FakeLLMServer, llm_kind: str) -> None:
    server.push(
        Reply(
            text="Let me look.",
            chunk_size=3,
            input_tokens=120,
            output_tokens=33,
            cache_read_tokens=100,
            tool_calls=[
                {"name": "read_file", "arguments": {"path": "notes/today.md"}, "id": "c1"},
                {"name": "shell", "arguments": {"cmd": "ls -la /tmp"}, "id": "c2"},
            ],
        )
    )
    llm = make(llm_kind, server)
    try:
        chunks = await collect(llm, tools=TOOLS)
    finally:
        await llm.aclose()
    calls = [c.call for c in chunks if isinstance(c, ToolCallChunk)]
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("c1", "read_file", {"path": "notes/today.md"}),
        ("c2", "shell", {"cmd": "ls -la /tmp"}),
    ]
    usages = [c.usage for c in chunks if isinstance(c, UsageChunk)]
    assert usages == [Usage(input_tokens=120, output_tokens=33, cache_read_tokens=100)]
    assert chunks[-1] == FinishChunk("tool_calls")
    assert text_of(chunks) == "Let me look."


async def test_invalid_tool_arguments_are_kept_raw(server: FakeLLMServer, llm_kind: str) -> None:
    server.push(Reply(tool_calls=[{"name": "shell", "arguments": '{"cmd": "ls'}]))
    llm = make(llm_kind, server)
    try:
        chunks = await collect(llm, tools=TOOLS)
    finally:
        await llm.aclose()
    (call,) = [c.call for c in chunks if isinstance(c, ToolCallChunk)]
    assert call.arguments == {"_raw": '{"cmd": "ls'}
    assert call.id


HISTORY = [
    SystemMessage(content="system one"),
    SystemMessage(content="system two"),
    HumanMessage(content="what is in this picture?", images=[ImagePart(data=b"\x89PNG", mime="image/png")]),
    AIMessage(content="Checking.", tool_calls=[ToolCall(id="t1", name="read_file", arguments={"path": "a"})]),
    ToolMessage(tool_call_id="t1", name="read_file", content="no such file", is_error=True),
    HumanMessage(content="and now?"),
]


async def test_openai_request_shape(server: FakeLLMServer) -> None:
    server.push(Reply(text="ok"))
    llm = make("openai", server)
    try:
        await collect(llm, HISTORY, TOOLS)
    finally:
        await llm.aclose()
    body = server.requests[0]
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["system", "system", "user", "assistant", "tool", "user"]
    image = msgs[2]["content"][1]
    assert image == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}}
    call = msgs[3]["tool_calls"][0]
    assert call["function"] == {"name": "read_file", "arguments": json.dumps({"path": "a"})}
    assert msgs[4]["tool_call_id"] == "t1" and "no such file" in msgs[4]["content"]
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "read_file", "description": "Read a file", "parameters": TOOLS[0].parameters},
    }
    assert body["stream_options"] == {"include_usage": True}


async def test_anthropic_request_shape(server: FakeLLMServer) -> None:
    server.push(Reply(text="ok"))
    llm = make("anthropic", server)
    try:
        await collect(llm, HISTORY, TOOLS)
    finally:
        await llm.aclose()
    body = server.requests[0]
    assert body["max_tokens"] == 4096
    assert body["system"] == [
        {"type": "text", "text": "system one"},
        {"type": "text", "text": "system two", "cache_control": {"type": "ephemeral"}},
    ]
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"][0] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
    }
    assert msgs[1]["content"][1] == {"type": "tool_use", "id": "t1", "name": "read_file", "input": {"path": "a"}}
    # The tool result and the next user message share one user turn, tool result first.
    assert msgs[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": "no such file",
        "is_error": True,
    }
    assert msgs[2]["content"][1] == {"type": "text", "text": "and now?"}
    assert body["tools"][1] == {"name": "shell", "description": "Run a command", "input_schema": TOOLS[1].parameters}


async def test_responder_answers_from_the_request(llm_kind: str) -> None:
    async with FakeLLMServer(responder=lambda req: f"echo: {req.last_user_text()}") as server:
        llm = make(llm_kind, server)
        try:
            first = text_of(await collect(llm))
            second = text_of(await collect(llm, [HumanMessage(content="again")]))
        finally:
            await llm.aclose()
    assert (first, second) == ("echo: hello", "echo: again")


# --- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "error", "retry_after"),
    [
        (ErrorTurn(status=429, retry_after=7), RateLimitError, 7.0),
        (ErrorTurn(status=429), RateLimitError, None),
        (ErrorTurn(status=529), OverloadedError, None),
        (ErrorTurn(status=503), OverloadedError, None),
        (ErrorTurn(status=500), ServerError, None),
        (ErrorTurn(status=401), AuthError, None),
        (ErrorTurn(status=403), AuthError, None),
        (ErrorTurn(status=400, message="prompt is too long"), BadRequestError, None),
        (ErrorTurn(status=404), BadRequestError, None),
    ],
)
async def test_http_errors_are_mapped(
    server: FakeLLMServer, llm_kind: str, turn: ErrorTurn, error: type, retry_after: float | None
) -> None:
    server.push(turn)
    llm = make(llm_kind, server)
    try:
        with pytest.raises(error) as info:
            await collect(llm)
    finally:
        await llm.aclose()
    assert type(info.value) is error
    assert info.value.status == turn.status
    assert info.value.retry_after == retry_after
    assert info.value.provider == llm_kind and info.value.model == "fake-model"
    assert len(server.requests) == 1  # the SDK did not retry on its own


async def test_retry_after_http_date(server: FakeLLMServer, llm_kind: str) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    server.push(ErrorTurn(status=429, retry_after=when))
    llm = make(llm_kind, server)
    try:
        with pytest.raises(RateLimitError) as info:
            await collect(llm)
    finally:
        await llm.aclose()
    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120


async def test_error_inside_the_stream_is_mapped(server: FakeLLMServer, llm_kind: str) -> None:
    server.push(ErrorTurn(status=200, type="overloaded_error", after_text="partial answ"))
    llm = make(llm_kind, server)
    got: list[LLMChunk] = []
    try:
        with pytest.raises(OverloadedError):
            async for chunk in llm.stream(PROMPT):
                got.append(chunk)
    finally:
        await llm.aclose()
    assert text_of(got) == "partial answ"


async def test_connection_refused_is_connection_error(llm_kind: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    if llm_kind == "openai":
        llm: LLM = OpenAILLM("m", "k", base_url=f"http://127.0.0.1:{port}/v1")
    else:
        llm = AnthropicLLM("m", "k", base_url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ConnectionError_):
            await collect(llm)
    finally:
        await llm.aclose()


async def test_read_timeout_is_timeout_error(server: FakeLLMServer, llm_kind: str) -> None:
    gate = asyncio.Event()  # never set while the client waits: the server stalls mid-response
    server.push(Reply(text="never sent", gate=gate))
    llm = make(llm_kind, server, timeout=0.3)
    try:
        with pytest.raises(TimeoutError_):
            await collect(llm)
    finally:
        gate.set()
        await llm.aclose()


@pytest.mark.parametrize("how", ["eof", "reset"])
async def test_a_stream_ending_before_its_finish_cuts_the_reply_off(
    server: FakeLLMServer, llm_kind: str, how: str
) -> None:
    server.push(Reply(text="Half an answer", chunk_size=4, unfinished=how))
    llm = make(llm_kind, server)
    got: list[LLMChunk] = []
    try:
        with pytest.raises(ConnectionDropped) as info:
            async for chunk in llm.stream(PROMPT):
                got.append(chunk)
    finally:
        await llm.aclose()
    # The text streamed stays; no FinishChunk pretends the reply was whole.
    assert text_of(got) == "Half an answer" and not any(isinstance(c, FinishChunk) for c in got)
    assert info.value.user_message == "The connection to the model dropped; the reply was cut off."


@pytest.mark.parametrize("how", ["eof", "reset"])
async def test_a_stream_ending_before_any_text_falls_back(llm_kind: str, how: str) -> None:
    # Half a tool call and no text: nothing was shown, so the next model may answer in full.
    broken = Reply(tool_calls=[{"name": "shell", "arguments": {"cmd": "rm -rf build"}}], unfinished=how)
    async with FakeLLMServer([broken, broken]) as first, FakeLLMServer([Reply(text="from the backup")]) as second:
        alone = make(llm_kind, first)
        # As the agent runs it: with the stream limits, which keep tool-call progress from counting as output.
        chain = with_limits(FallbackLLM([make(llm_kind, first), make("openai", second)]), StreamLimits())
        try:
            with pytest.raises(ConnectionError_):
                await collect(alone, tools=TOOLS)
            chunks = await collect(chain, tools=TOOLS)
        finally:
            await alone.aclose()
            await chain.aclose()
    assert text_of(chunks) == "from the backup" and not any(isinstance(c, ToolCallChunk) for c in chunks)
    assert isinstance(chain, FallbackLLM) and chain.last_model == "openai/fake-model"


async def test_lone_surrogates_in_the_history_are_sent_as_replacement_characters(
    server: FakeLLMServer, llm_kind: str
) -> None:
    # A tool result naming a file that is not UTF-8, a model's "\udc80" escapes: no request body can carry them.
    messages = [
        SystemMessage(content="s"),
        HumanMessage(content="list"),
        AIMessage(content="Looking \ud83d", tool_calls=[ToolCall(id="c1", name="ls", arguments={"path": "caf\udce9"})]),
        ToolMessage(tool_call_id="c1", name="ls", content="caf\udce9.txt"),
    ]
    server.push(Reply(text="ok"))
    llm = make(llm_kind, server)
    try:
        chunks = await collect(llm, messages)
    finally:
        await llm.aclose()
    assert text_of(chunks) == "ok"
    sent = server.requests[0]["messages"]
    if llm_kind == "openai":
        assert sent[2]["content"] == "Looking \ufffd"
        assert json.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {"path": "caf\ufffd"}
        assert sent[3]["content"] == "caf\ufffd.txt"
    else:
        assert sent[1]["content"] == [
            {"type": "text", "text": "Looking \ufffd"},
            {"type": "tool_use", "id": "c1", "name": "ls", "input": {"path": "caf\ufffd"}},
        ]
        assert sent[2]["content"][0]["content"] == "caf\ufffd.txt"


# --- fallback chain ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedLLM(LLM):
    """A pure-Python model: each call pops the next outcome (text to answer, or an exception to raise)."""

    provider = "stub"

    def __init__(self, name: str, outcomes: Sequence[str | Exception] = (), default: str | Exception = "ok") -> None:
        super().__init__(name)
        self.outcomes = list(outcomes)
        self.default = default
        self.calls = 0

    async def stream(self, messages, tools=()):  # type: ignore[no-untyped-def]
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else self.default
        if isinstance(outcome, Exception):
            raise outcome
        yield TextChunk(outcome)
        yield FinishChunk("stop")


def overloaded(retry_after: float | None = None) -> OverloadedError:
    return OverloadedError("overloaded", status=529, retry_after=retry_after)


async def test_fallback_from_overloaded_model_through_sdks(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeLLMServer([ErrorTurn(status=529)]) as first, FakeLLMServer([Reply(text="from backup")]) as second:
        chain = FallbackLLM([make("anthropic", first), make("openai", second)])
        try:
            with caplog.at_level(logging.WARNING, logger="operator_use.providers.llm.fallback"):
                chunks = await collect(chain)
        finally:
            await chain.aclose()
    assert text_of(chunks) == "from backup"
    assert chain.last_model == "openai/fake-model"
    assert any("anthropic/fake-model" in r.getMessage() and "OverloadedError" in r.getMessage() for r in caplog.records)
    assert not any("sk-" in r.getMessage() for r in caplog.records)


async def test_fallback_from_rate_limited_model_with_long_retry_after() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with (
        FakeLLMServer([ErrorTurn(status=429, retry_after=30)]) as first,
        FakeLLMServer([Reply(text="second model")]) as second,
    ):
        chain = FallbackLLM([make("openai", first), make("anthropic", second)], sleep=sleep)
        try:
            chunks = await collect(chain)
        finally:
            await chain.aclose()
    assert text_of(chunks) == "second model"
    assert chain.last_model == "anthropic/fake-model"
    assert slept == []  # not the last model: skip ahead instead of waiting


async def test_last_model_waits_out_a_short_retry_after_once() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with FakeLLMServer([ErrorTurn(status=429, retry_after=2), Reply(text="after the wait")]) as server:
        chain = FallbackLLM([make("openai", server)], sleep=sleep)
        try:
            chunks = await collect(chain)
        finally:
            await chain.aclose()
        assert len(server.requests) == 2
    assert slept == [2.0]
    assert text_of(chunks) == "after the wait"


async def test_last_model_retries_only_once_and_not_for_long_waits() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limited = RateLimitError("slow down", retry_after=1)
    model = ScriptedLLM("only", [limited, limited])
    chain = FallbackLLM([model], sleep=sleep)
    with pytest.raises(RateLimitError):
        await collect(chain)
    assert (model.calls, slept) == (2, [1])

    model = ScriptedLLM("only", [RateLimitError("slow down", retry_after=60)])
    chain = FallbackLLM([model], sleep=sleep, max_wait=10)
    with pytest.raises(RateLimitError):
        await collect(chain)
    assert model.calls == 1


async def test_no_fallback_on_auth_error() -> None:
    async with FakeLLMServer([ErrorTurn(status=401)]) as first, FakeLLMServer([Reply(text="never")]) as second:
        chain = FallbackLLM([make("openai", first), make("openai", second)])
        try:
            with pytest.raises(AuthError):
                await collect(chain)
        finally:
            await chain.aclose()
        assert second.requests == []


async def test_no_fallback_on_bad_request() -> None:
    backup = ScriptedLLM("backup")
    chain = FallbackLLM([ScriptedLLM("main", [BadRequestError("context too long", status=400)]), backup])
    with pytest.raises(BadRequestError):
        await collect(chain)
    assert backup.calls == 0


async def test_error_after_text_is_reraised_without_fallback() -> None:
    async with (
        FakeLLMServer([ErrorTurn(status=200, type="overloaded_error", after_text="half a sent")]) as first,
        FakeLLMServer([Reply(text="never")]) as second,
    ):
        chain = FallbackLLM([make("anthropic", first), make("openai", second)])
        got: list[LLMChunk] = []
        try:
            with pytest.raises(OverloadedError):
                async for chunk in chain.stream(PROMPT):
                    got.append(chunk)
        finally:
            await chain.aclose()
        assert second.requests == []
    assert text_of(got) == "half a sent"
    assert chain.last_model == "anthropic/fake-model"


async def test_all_models_failing_raises_the_last_error() -> None:
    chain = FallbackLLM([ScriptedLLM("a", [overloaded()]), ScriptedLLM("b", [ServerError("boom", status=502)])])
    with pytest.raises(ServerError):
        await collect(chain)


async def test_circuit_breaker_skips_then_retries_after_cooldown() -> None:
    clock = Clock()
    main = ScriptedLLM("main", default=overloaded())
    backup = ScriptedLLM("backup", default="backup answer")
    chain = FallbackLLM([main, backup], failure_threshold=3, cooldown=60, clock=clock)

    for _ in range(3):
        assert text_of(await collect(chain)) == "backup answer"
    assert main.calls == 3

    # Open: the main model is not even tried.
    assert chain.is_open(0)
    assert text_of(await collect(chain)) == "backup answer"
    assert main.calls == 3

    clock.now += 59
    await collect(chain)
    assert main.calls == 3

    # Cooldown over: one more try; it succeeds and resets the breaker.
    clock.now += 2
    main.default = "main is back"
    assert text_of(await collect(chain)) == "main is back"
    assert main.calls == 4
    assert chain.last_model == "stub/main"
    assert not chain.is_open(0)


async def test_circuit_breaker_reopens_after_a_failed_trial_and_success_resets_count() -> None:
    clock = Clock()
    main = ScriptedLLM("main", [overloaded(), overloaded(), "fine", overloaded(), overloaded()], default=overloaded())
    chain = FallbackLLM([main, ScriptedLLM("backup")], failure_threshold=3, cooldown=60, clock=clock)
    for _ in range(5):
        await collect(chain)
    # Two failures, a success (reset), two failures: still below the threshold.
    assert not chain.is_open(0)
    await collect(chain)
    assert chain.is_open(0)
    clock.now += 61
    await collect(chain)  # the trial fails: open again at once
    assert main.calls == 7
    assert chain.is_open(0)


async def test_cooldown_honours_a_longer_retry_after() -> None:
    clock = Clock()
    main = ScriptedLLM("main", default=RateLimitError("limited", retry_after=300))
    chain = FallbackLLM([main, ScriptedLLM("backup")], failure_threshold=1, cooldown=60, clock=clock)
    await collect(chain)
    clock.now += 120
    assert chain.is_open(0)
    clock.now += 181
    assert not chain.is_open(0)


async def test_all_breakers_open_still_tries_in_order() -> None:
    clock = Clock()
    a = ScriptedLLM("a", [overloaded()], default="a answers")
    b = ScriptedLLM("b", [overloaded()], default="b answers")
    chain = FallbackLLM([a, b], failure_threshold=1, cooldown=60, clock=clock)
    with pytest.raises(OverloadedError):
        await collect(chain)
    assert chain.is_open(0) and chain.is_open(1)
    assert text_of(await collect(chain)) == "a answers"
    assert (a.calls, b.calls) == (2, 1)


# --- detection --------------------------------------------------------------------------------


async def no_server(base_url: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("env", "provider", "var"),
    [
        ({"ANTHROPIC_API_KEY": "x", "OPENAI_API_KEY": "y"}, "anthropic", "ANTHROPIC_API_KEY"),
        ({"OPENAI_API_KEY": "y", "GROQ_API_KEY": "z"}, "openai", "OPENAI_API_KEY"),
        ({"ANTHROPIC_API_KEY": " ", "GROQ_API_KEY": "z"}, "groq", "GROQ_API_KEY"),
        ({"OPENROUTER_API_KEY": "a", "GEMINI_API_KEY": "b"}, "openrouter", "OPENROUTER_API_KEY"),
        ({"GEMINI_API_KEY": "b", "MISTRAL_API_KEY": "c"}, "gemini", "GEMINI_API_KEY"),
        ({"DEEPSEEK_API_KEY": "d", "CEREBRAS_API_KEY": "e"}, "deepseek", "DEEPSEEK_API_KEY"),
        ({"CEREBRAS_API_KEY": "e"}, "cerebras", "CEREBRAS_API_KEY"),
    ],
)
async def test_detect_from_env_keys(env: dict[str, str], provider: str, var: str) -> None:
    probed: list[str] = []

    async def probe(base_url: str) -> bool:
        probed.append(base_url)
        return True

    found = await detect_llm(env, probe)
    assert found is not None
    assert found.provider == provider
    assert found.model == PRESETS[provider].default_model
    assert found.base_url == PRESETS[provider].base_url
    assert var in found.reason and found.reason.startswith("using ")
    assert probed == []  # a key wins without touching the network


async def test_detect_local_server_in_port_order() -> None:
    async def probe(base_url: str) -> list[str] | bool:
        return {"http://127.0.0.1:1234/v1": ["qwen2.5-7b-instruct"], "http://127.0.0.1:8000/v1": True}.get(
            base_url, False
        )

    found = await detect_llm({}, probe)
    assert found == Detection("lmstudio", "qwen2.5-7b-instruct", "http://127.0.0.1:1234/v1", found.reason)
    assert "LM Studio" in found.reason

    async def ollama_up(base_url: str) -> bool:
        if "11434" in base_url:
            return True
        raise OSError("probe failed")

    found = await detect_llm({}, ollama_up)
    assert found is not None and (found.provider, found.model) == ("ollama", None)


async def test_detect_nothing() -> None:
    assert await detect_llm({"UNRELATED": "1"}, no_server) is None
    text = explain_no_llm()
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GROQ_API_KEY", "ollama", "llm:", "provider"):
        assert var in text


async def test_default_probe_lists_models(server: FakeLLMServer) -> None:
    server.models = ["llama3.2:latest", "qwen2.5:7b"]
    assert await probe_models(server.openai_base_url) == ["llama3.2:latest", "qwen2.5:7b"]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert await probe_models(f"http://127.0.0.1:{port}/v1") is None


# --- presets ----------------------------------------------------------------------------------


async def test_make_llm_presets() -> None:
    env = {"GROQ_API_KEY": "gsk-1", "ANTHROPIC_API_KEY": "sk-ant-1", "GEMINI_API_KEY": "g-1"}
    built: list[LLM] = []
    try:
        groq = make_llm("groq", None, env=env)
        built.append(groq)
        assert isinstance(groq, OpenAILLM)
        assert (groq.provider, groq.model) == ("groq", PRESETS["groq"].default_model)
        assert str(groq._client.base_url).startswith("https://api.groq.com/openai/v1")
        assert groq._client.api_key == "gsk-1"

        claude = make_llm("anthropic", "claude-x", env=env, max_tokens=1000)
        built.append(claude)
        assert isinstance(claude, AnthropicLLM) and claude.max_tokens == 1000 and claude.label == "anthropic/claude-x"

        gemini = make_llm("gemini", "gemini-2.5-pro", api_key=SecretStr("explicit"), env=env)
        built.append(gemini)
        assert gemini._client.api_key == "explicit"
        assert "generativelanguage.googleapis.com" in str(gemini._client.base_url)

        local = make_llm("ollama", "llama3.2", env={})
        built.append(local)
        assert local._client.api_key == LOCAL_KEY
        assert str(local._client.base_url).startswith("http://127.0.0.1:11434/v1")

        custom = make_llm("my-proxy", "m", base_url="http://127.0.0.1:9999/v1", env={})
        built.append(custom)
        assert isinstance(custom, OpenAILLM) and custom.provider == "my-proxy"

        with pytest.raises(ValueError, match="MISTRAL_API_KEY"):
            make_llm("mistral", None, env={})
        with pytest.raises(ValueError, match="unknown LLM provider"):
            make_llm("nonsense", "m", env={})
        with pytest.raises(ValueError, match="no model"):
            make_llm("vllm", None, env={})
    finally:
        for llm in built:
            await llm.aclose()


async def test_make_llm_talks_to_a_compatible_server(server: FakeLLMServer) -> None:
    server.push(Reply(text="through a preset"))
    llm = make_llm("vllm", "fake-model", base_url=server.openai_base_url, env={})
    try:
        assert text_of(await collect(llm)) == "through a preset"
    finally:
        await llm.aclose()
    assert server.calls[0].headers["Authorization"] == f"Bearer {LOCAL_KEY}"


def test_package_import_does_not_load_sdks() -> None:
    code = (
        "import sys, operator_use.providers.llm, operator_use.providers.llm.presets, "
        "operator_use.providers.llm.fallback, operator_use.providers.llm.detect; "
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
