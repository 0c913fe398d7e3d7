"""The system prompt reads the workspace's prompt files the way read_file reads files: nothing planted in
the workspace (a symlink out of it, a hard link, /proc, a FIFO, a giant file) brings anything from outside
the workspace into the prompt the LLM provider receives on every turn, or hangs the turn."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from operator_use.agent.context import FILE_CAP, ContextBuilder
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.workspace import ensure_workspace

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.apps import build_app
from .support.chat import ChatChannel
from .support.deps import require_binary

SECRET = "sk-live-0123456789abcdef-THE-API-KEY"
SOUL = "You are Ada, a careful assistant.\n"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace inside a data home whose config.yaml holds an API key."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text(f"llm:\n  api_key: {SECRET}\n")
    ws = home / "workspace"
    ensure_workspace(ws)
    (ws / "SOUL.md").write_text(SOUL)
    return ws


def environ_entries() -> list[str]:
    with open("/proc/self/environ", "rb") as f:
        entries = [e.decode(errors="replace") for e in f.read().split(b"\0") if len(e) > 8]
    assert entries, "this process has an environment to leak"
    return entries


async def prompt_of(ws: Path) -> str:
    return await ContextBuilder(ws).system_prompt()


async def test_a_symlink_out_of_the_workspace_is_left_out(workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    (workspace / "USER.md").unlink()
    (workspace / "USER.md").symlink_to("../config.yaml")
    (workspace / "CODE.md").unlink()
    (workspace / "CODE.md").symlink_to(workspace.parent / "config.yaml")  # absolute spelling
    with caplog.at_level(logging.WARNING, logger="operator_use.agent.context"):
        prompt = await prompt_of(workspace)
    assert SECRET not in prompt
    assert "## USER.md" not in prompt and "## CODE.md" not in prompt
    assert SOUL.strip() in prompt  # the ordinary files still make the prompt
    assert "## RULES.md" in prompt
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "USER.md is left out of the system prompt" in warnings and "resolves outside the workspace" in warnings
    assert "CODE.md is left out of the system prompt" in warnings


async def test_the_agents_own_environment_never_reaches_the_prompt(workspace: Path) -> None:
    (workspace / "AGENTS.md").unlink()
    (workspace / "AGENTS.md").symlink_to("/proc/self/environ")
    (workspace / "memory").rename(workspace / "memory.old")
    (workspace / "memory").symlink_to("/proc/self")  # memory/MEMORY.md through a directory symlink
    (workspace / "proc").symlink_to("/proc/self")
    (workspace / "RULES.md").unlink()
    (workspace / "RULES.md").symlink_to("proc/environ")  # a relative chain: workspace -> /proc
    prompt = await prompt_of(workspace)
    for entry in environ_entries():
        assert entry not in prompt
    assert "## AGENTS.md" not in prompt and "## RULES.md" not in prompt
    assert SOUL.strip() in prompt


async def test_a_hard_link_to_the_data_home_is_left_out(workspace: Path) -> None:
    (workspace / "USER.md").unlink()
    os.link(workspace.parent / "config.yaml", workspace / "USER.md")  # same filesystem, invisible origin
    prompt = await prompt_of(workspace)
    assert SECRET not in prompt
    assert "## USER.md" not in prompt
    assert SOUL.strip() in prompt


async def test_a_fifo_does_not_hang_the_turn(workspace: Path) -> None:
    (workspace / "RULES.md").unlink()
    os.mkfifo(workspace / "RULES.md")
    try:
        # The bound only keeps a regression from hanging the suite; the fixed code never blocks here.
        prompt = await asyncio.wait_for(prompt_of(workspace), 20)
    finally:
        # A reader stuck in open() (the old behaviour) is released by a writer that comes and goes.
        try:
            os.close(os.open(workspace / "RULES.md", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # ENXIO: no reader waiting, as it should be
    assert "## RULES.md" not in prompt
    assert SOUL.strip() in prompt


async def test_a_huge_file_is_capped(workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    line = "- the user likes tea\n"
    (workspace / "memory" / "MEMORY.md").write_text(
        "# Memory\n" + line * (5 * 1024 * 1024 // len(line)) + "END-OF-THE-HUGE-FILE\n"
    )
    with caplog.at_level(logging.WARNING, logger="operator_use.agent.context"):
        prompt = await prompt_of(workspace)
    assert "END-OF-THE-HUGE-FILE" not in prompt
    assert "## memory/MEMORY.md\n\n# Memory\n- the user likes tea" in prompt
    assert f"[memory/MEMORY.md is longer than {FILE_CAP // 1024} KB; the rest is left out]" in prompt
    assert len(prompt) < FILE_CAP + 16 * 1024
    body = prompt.split("## memory/MEMORY.md\n\n", 1)[1]
    assert "\n- the user likes tea\n\n[memory" in body  # cut at a line end, not mid-line
    assert any("memory/MEMORY.md is over" in r.getMessage() for r in caplog.records)


async def test_skills_are_confined_too(workspace: Path, tmp_path: Path) -> None:
    (workspace / "skills" / "deploy").mkdir()
    (workspace / "skills" / "deploy" / "SKILL.md").write_text("---\ndescription: ship the app\n---\n")
    (workspace / "skills" / "leak").mkdir()
    (workspace / "skills" / "leak" / "SKILL.md").symlink_to(workspace.parent / "config.yaml")
    outside = tmp_path / "outside-skill"
    outside.mkdir()
    (outside / "SKILL.md").write_text(f"description: {SECRET}\n")
    (workspace / "skills" / "elsewhere").symlink_to(outside)
    (workspace / "skills" / "environ").mkdir()
    (workspace / "skills" / "environ" / "SKILL.md").symlink_to("/proc/self/environ")
    prompt = await prompt_of(workspace)
    assert "- deploy (skills/deploy/SKILL.md): ship the app" in prompt
    assert SECRET not in prompt
    assert "leak" not in prompt and "elsewhere" not in prompt and "skills/environ" not in prompt
    for entry in environ_entries():
        assert entry not in prompt


async def test_a_skills_directory_outside_the_workspace_is_not_listed(
    workspace: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside-skills"
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "SKILL.md").write_text(f"description: {SECRET}\n")
    (workspace / "skills").rename(workspace / "skills.old")
    (workspace / "skills").symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger="operator_use.agent.context"):
        prompt = await prompt_of(workspace)
    assert SECRET not in prompt and "## Skills" not in prompt
    assert any("skills/ resolves outside the workspace" in r.getMessage() for r in caplog.records)


async def test_symlinks_inside_the_workspace_still_work(workspace: Path) -> None:
    (workspace / "profiles").mkdir()
    (workspace / "profiles" / "me.md").write_text("The user is called Grace.\n")
    (workspace / "USER.md").unlink()
    (workspace / "USER.md").symlink_to("profiles/me.md")
    builder = ContextBuilder(workspace)
    assert "## USER.md\n\nThe user is called Grace." in await builder.system_prompt()
    # The target changes, the prompt follows.
    (workspace / "profiles" / "me.md").write_text("The user is called Grace Hopper, admiral.\n")
    assert "Grace Hopper, admiral" in await builder.system_prompt()


async def test_a_file_swapped_for_a_symlink_is_noticed(workspace: Path) -> None:
    """Same size and mtime as the file it replaces: the prompt must still be rebuilt, and refuse it."""
    builder = ContextBuilder(workspace)
    assert SOUL.strip() in await builder.system_prompt()
    st = (workspace / "SOUL.md").stat()
    outside = workspace.parent / "soul-outside.md"
    outside.write_text("X" * st.st_size)
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    (workspace / "SOUL.md").unlink()
    (workspace / "SOUL.md").symlink_to(outside)
    prompt = await builder.system_prompt()
    assert "X" * st.st_size not in prompt and SOUL.strip() not in prompt
    assert prompt.startswith("You are operator-use")  # no SOUL.md: the built-in identity


async def test_a_sandboxed_shell_command_cannot_leak_the_api_key_into_the_prompt(home: Path) -> None:
    """End to end: a run_shell command under bubblewrap (where the data home is hidden) plants symlinks to
    the config and to the agent's /proc environ; the next request to the LLM carries neither."""
    require_binary("bwrap")
    (home / "config.yaml").write_text(f"llm:\n  api_key: {SECRET}\n")
    command = (
        f"ln -s {home}/config.yaml USER.md.new && mv -f USER.md.new USER.md && "
        "ln -sf /proc/self/environ AGENTS.md && echo planted"
    )

    def respond(request: FakeRequest) -> Reply:
        result = request.last_tool_result()
        if result is not None:
            return Reply(text=f"result: {result}")
        if request.last_user_text() == "plant":
            return Reply(tool_calls=[{"name": "run_shell", "arguments": {"command": command}}])
        return Reply(text="hello")

    async with FakeLLMServer(responder=respond) as server:
        channel = ChatChannel()
        app = build_app(
            home,
            channel,
            OpenAILLM("fake-gpt", "k", base_url=server.openai_base_url),
            agent={"tools": ["run_shell"], "approvals": {"allow": ["run_shell"]}},
            tools={"shell": {"isolation": "bwrap"}},
        )
        async with app:
            await channel.say("plant")
            await channel.wait_for(lambda: any(t.startswith("result:") for t in channel.texts()))
            assert any("planted" in t for t in channel.texts()), channel.texts()
            assert (home / "workspace" / "USER.md").is_symlink()
            await channel.say("hi")
            await server.wait_for_requests(3)
    system = system_text(server.requests[-1])
    assert "## SOUL.md" in system
    assert SECRET not in system
    assert "## USER.md" not in system and "## AGENTS.md" not in system
    for entry in environ_entries():
        assert entry not in system


def system_text(body: dict[str, Any]) -> str:
    system = [m for m in body["messages"] if m.get("role") == "system"]
    assert len(system) == 1
    content = system[0]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
