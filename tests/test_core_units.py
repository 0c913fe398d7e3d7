"""Units of the core: context builder, command parsing, lanes, hooks, config, messages."""

from __future__ import annotations

import asyncio
import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operator_use.agent import context as context_module
from operator_use.agent.context import ContextBuilder
from operator_use.agent.hooks import Hooks
from operator_use.agent.tools import Tool, ToolResult
from operator_use.bus.memory import MemoryBus
from operator_use.config import load_config
from operator_use.messages import (
    Address,
    AIMessage,
    AudioPart,
    HistoryAdapter,
    IncomingMessage,
    OutboundAdapter,
    StreamDelta,
    TextPart,
    ToolCall,
)
from operator_use.orchestrator.commands import parse_command, parse_spoken_command
from operator_use.orchestrator.lanes import Lanes
from operator_use.workspace import ensure_workspace


async def test_system_prompt_is_built_from_workspace_files_most_stable_first(tmp_path: Path) -> None:
    ensure_workspace(tmp_path)
    (tmp_path / "skills" / "deploy").mkdir()
    (tmp_path / "skills" / "deploy" / "SKILL.md").write_text("---\ndescription: ship the app\n---\n# Deploy\n")
    prompt = await ContextBuilder(tmp_path).system_prompt()
    order = [
        prompt.index(h)
        for h in (
            "## SOUL.md",
            "## RULES.md",
            "## AGENTS.md",
            "## CODE.md",
            "## Skills",
            "## USER.md",
            "## memory/MEMORY.md",
        )
    ]
    assert order == sorted(order)
    assert "deploy (skills/deploy/SKILL.md): ship the app" in prompt


async def test_system_prompt_is_not_rebuilt_when_nothing_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_workspace(tmp_path)
    builds = []
    real_build = context_module._build
    monkeypatch.setattr(context_module, "_build", lambda *a: builds.append(1) or real_build(*a))
    builder = ContextBuilder(tmp_path)
    first = await builder.system_prompt()
    assert await builder.system_prompt() == first
    assert len(builds) == 1
    memory = tmp_path / "memory" / "MEMORY.md"
    memory.write_text("- the user likes tea\n")
    os.utime(memory, ns=(memory.stat().st_atime_ns, memory.stat().st_mtime_ns + 10**9))
    assert "likes tea" in await builder.system_prompt()
    assert len(builds) == 2


@pytest.mark.parametrize(
    "text,expected",
    [
        ("/help", ("help", "", None)),
        ("/new@operator_bot", ("new", "", "operator_bot")),
        ("/STATUS  now", ("status", "now", None)),
        ("!stop", ("stop", "", None)),
        ("/voice@bot always \n", ("voice", "always", "bot")),
    ],
)
def test_commands_are_parsed_centrally(text: str, expected: tuple) -> None:  # type: ignore[type-arg]
    command = parse_command(text)
    assert command is not None and (command.name, command.args, command.target) == expected


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "/",
        "/etc/passwd is a file",
        "path /tmp",
        "//x",
        "! stop",
        " /new@otherbot",
        "  /voice@bot always",
        "\n/new",
        "\t!stop",
    ],
)
def test_plain_text_is_not_a_command(text: str) -> None:
    # A command starts the message, as on Telegram: with anything before it, it is text for the agent.
    assert parse_command(text) is None


# Bounded and reproducible: the same inputs on every run, no example database in the working tree.
def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# Any code point, lone surrogates and control characters included, plus the characters commands are made of.
ANY_TEXT = st.text(
    st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), st.sampled_from("/@!_ \n\t")
    ),
    max_size=200,
)
WORD = st.text("abcxyzABZ019_", min_size=1, max_size=31)


def check_command(text: str) -> None:
    command = parse_command(text)
    if command is None:
        return
    assert text[:1] in ("/", "!"), "only a message that starts with the command is one"
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,31}", command.name)
    assert command.args == command.args.strip()
    assert command.target is None or (command.target and not any(c.isspace() for c in command.target))


@fuzz(2000)
@given(ANY_TEXT)
def test_the_command_parser_takes_any_text(text: str) -> None:
    check_command(text)


def test_the_parsers_take_many_command_like_messages() -> None:
    """A seeded generator, far faster than hypothesis per input: 30,000 messages made of the pieces commands
    are made of, broken UTF-16 and odd whitespace included."""
    rng = random.Random(1213)
    pieces = [
        "/",
        "/new",
        "/NEW",
        "@",
        "@otherbot",
        "!stop",
        "!",
        " ",
        "  ",
        "\n",
        "\t",
        "\u00a0",
        "\u2028",
        "\ud800",
        "\udfff",
        "\x00",
        "slash",
        "Slash,",
        "new",
        "voice",
        "off",
        ".",
        "é",
        "😀",
        "_",
        "x" * 40,
    ]
    for _ in range(30_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        check_command(text)
        spoken = parse_spoken_command(text, ["new", "voice", "stop"])
        assert spoken is None or spoken.name in ("new", "voice", "stop")


@fuzz(500)
@given(ANY_TEXT.filter(lambda prefix: prefix[:1] not in ("", "/")), ANY_TEXT)
def test_nothing_may_come_before_a_command(prefix: str, rest: str) -> None:
    assert parse_command(prefix + "/new@otherbot " + rest) is None


@fuzz(500)
@given(st.sampled_from("aZ"), st.text("abcxyzABZ019_", max_size=30), st.one_of(st.none(), WORD), ANY_TEXT)
def test_a_command_round_trips(first: str, more: str, target: str | None, args: str) -> None:
    name = first + more
    text = f"/{name}" + (f"@{target}" if target else "") + (f" {args}" if args else "")
    command = parse_command(text)
    assert command is not None
    assert (command.name, command.target, command.args) == (name.lower(), target, args.strip())


@fuzz(500)
@given(ANY_TEXT, st.lists(WORD.map(str.lower), max_size=5))
def test_the_spoken_command_parser_takes_any_text(transcript: str, known: list[str]) -> None:
    command = parse_spoken_command(transcript, known)
    assert command is None or command.name in known


async def test_lanes_serialize_per_key_and_run_keys_concurrently() -> None:
    order: list[str] = []
    gate = asyncio.Event()
    both_started = asyncio.Barrier(2)

    async def handle(item: str) -> None:
        order.append(f"start {item}")
        if item in ("a1", "b1"):
            await both_started.wait()  # a1 and b1 must be in flight together
            await gate.wait()
        order.append(f"end {item}")

    lanes: Lanes[str] = Lanes(handle, max_concurrent=4)
    lanes.submit("a", "a1")
    lanes.submit("a", "a2")
    lanes.submit("b", "b1")
    await asyncio.sleep(0)  # let the lanes start
    await asyncio.wait_for(_until(lambda: order.count("start a1") and order.count("start b1")), 5)
    assert "start a2" not in order and lanes.queued("a") == 1
    gate.set()
    await asyncio.wait_for(lanes.idle(), 5)
    assert order.index("end a1") < order.index("start a2")


async def test_global_limit_caps_concurrent_turns() -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def handle(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    lanes: Lanes[int] = Lanes(handle, max_concurrent=2)
    for i in range(5):
        lanes.submit(f"k{i}", i)
    await asyncio.wait_for(_until(lambda: running == 2), 5)
    release.set()
    await asyncio.wait_for(lanes.idle(), 5)
    assert peak == 2


async def _until(predicate) -> None:  # type: ignore[no-untyped-def]
    while not predicate():  # noqa: ASYNC110 — state of tasks on this loop: one turn of the loop each check
        await asyncio.sleep(0)


async def test_a_before_tool_hook_can_stand_in_for_a_call_and_a_failing_hook_refuses() -> None:
    hooks = Hooks()

    async def deny_shell(ctx, call):  # type: ignore[no-untyped-def]
        return ToolResult("denied by policy", is_error=True) if call.name == "run_shell" else None

    hooks.before_tool.append(deny_shell)
    assert (await hooks.gate_tool(None, ToolCall(id="1", name="run_shell"))).content == "denied by policy"  # type: ignore[arg-type, union-attr]
    assert await hooks.gate_tool(None, ToolCall(id="2", name="read_file")) is None  # type: ignore[arg-type]

    async def broken(ctx, call):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    hooks.before_tool.insert(0, broken)
    verdict = await hooks.gate_tool(None, ToolCall(id="3", name="read_file"))  # type: ignore[arg-type]
    assert verdict is not None and verdict.is_error


async def test_tool_arguments_are_validated_with_a_clear_error() -> None:
    from pydantic import BaseModel

    class P(BaseModel):
        count: int

    tool = Tool("count", "Count.", P, lambda ctx, p: p.count * 2)
    bad = await tool.run(None, {"count": "many"})  # type: ignore[arg-type]
    assert bad.is_error and "count" in bad.content
    good = await tool.run(None, {"count": 21})  # type: ignore[arg-type]
    assert good.content == "42" and not good.is_error


def test_environment_overrides_the_file_with_nested_keys(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "config.yaml").write_text(
        "agent:\n  max_iterations: 7\n  max_concurrent_turns: 3\nllm:\n  model: from-file\n"
    )
    monkeypatch.setenv("OPERATOR_AGENT__MAX_ITERATIONS", "9")
    monkeypatch.setenv("OPERATOR_LLM__API_KEY", "sk-secret")
    config = load_config()
    assert config.agent.max_iterations == 9 and config.agent.max_concurrent_turns == 3
    assert config.llm.model == "from-file"
    assert "sk-secret" not in repr(config) and config.llm.api_key.get_secret_value() == "sk-secret"  # type: ignore[union-attr]
    assert config.masked()["llm"]["api_key"] == "**********"


async def test_messages_round_trip_through_json() -> None:
    incoming = IncomingMessage(
        channel="telegram",
        chat_id="1",
        thread_id="7",
        user_id="u",
        parts=[TextPart(text="hi"), AudioPart(data=b"\x00\xffOgg", mime="audio/ogg")],
    )
    again = IncomingMessage.model_validate_json(incoming.model_dump_json())
    assert again == incoming and again.key == "telegram:1:7"
    delta = StreamDelta(address=Address(channel="c", chat_id="1"), stream_id="s", delta="x")
    assert OutboundAdapter.validate_json(delta.model_dump_json()) == delta
    ai = AIMessage(content="a", tool_calls=[ToolCall(id="1", name="t", arguments={"k": [1, 2]})])
    assert HistoryAdapter.validate_json(ai.model_dump_json()) == ai


async def test_the_bus_is_bounded_and_applies_back_pressure() -> None:
    bus = MemoryBus(maxsize=2)
    message = IncomingMessage.of_text("c", "1", "u", "hi")
    await bus.publish_incoming(message)
    await bus.publish_incoming(message)
    blocked = asyncio.create_task(bus.publish_incoming(message))
    await asyncio.sleep(0)
    assert not blocked.done()  # the third publisher waits instead of growing the queue
    await bus.next_incoming()
    await asyncio.wait_for(blocked, 5)
    assert bus.incoming.qsize() == 2
