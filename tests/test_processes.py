"""Background processes: start, read, stop; per-conversation; stopped by /stop, /new and shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from operator_use.agent.tools import ToolError
from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.tools.config import ProcessesConfig
from operator_use.tools.jobs import group_alive as _group_alive
from operator_use.tools.processes import BackgroundProcess, ProcessManager, RingBuffer

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.apps import build_app
from .support.chat import ChatChannel


def ctx_for(ws: Path, chat: str = "1") -> TurnContext:
    return TurnContext(address=Address(channel="t", chat_id=chat), user_id="u", session_key=f"t:{chat}", workspace=ws)


async def wait_output(manager: ProcessManager, ctx: TurnContext, pid: str, needle: bytes) -> None:
    bp = manager.of(ctx.session_key)[pid]
    while needle not in bytes(bp.buffer.data):
        bp.buffer.grew.clear()
        await asyncio.wait_for(bp.buffer.grew.wait(), 10)


# Leaves the command's session and process group (setsid), its parent exits at once: it used to be
# reparented to init and outlive stop_process, /stop, /new and shutdown. Prints its pid.
ESCAPE = "setsid sh -c 'sleep 1000 & echo escapee=$!' & wait; "


def is_dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # where PID 1 does not reap, a killed orphan stays a zombie


async def wait_dead(pid: int, within: float = 10.0) -> bool:
    """Poll for the process to be gone, for at most `within` seconds (a bound, not a wait for time)."""
    async with asyncio.timeout(within):
        while not is_dead(pid):
            await asyncio.sleep(0.02)
    return True


async def escapee_of(bp: BackgroundProcess) -> int:
    while b"escapee=" not in bytes(bp.buffer.data) or not bytes(bp.buffer.data).split(b"escapee=")[1].strip():
        bp.buffer.grew.clear()
        await asyncio.wait_for(bp.buffer.grew.wait(), 10)
    pid = int(bytes(bp.buffer.data).split(b"escapee=")[1].split()[0])
    ESCAPEES.append(pid)
    return pid


ESCAPEES: list[int] = []


@pytest.fixture(autouse=True)
def _kill_escapees():
    """A failing test must not leave its escapee running."""
    yield
    while ESCAPEES:
        pid = ESCAPEES.pop()
        if not is_dead(pid):
            os.kill(pid, signal.SIGKILL)


async def test_start_read_stop(tmp_path: Path) -> None:
    manager = ProcessManager()
    ctx = ctx_for(tmp_path)
    bp = await manager.start(ctx, "echo started; sleep 30 & echo child=$!; wait")
    await wait_output(manager, ctx, bp.id, b"child=")
    first = manager.read(ctx, bp.id)
    assert first.startswith(f"[{bp.id}: running") and "started" in first
    assert "(no new output)" in manager.read(ctx, bp.id)  # each read returns only what is new
    tools = {t.name: t for t in manager.tools()}
    listing = await tools["list_processes"].run(ctx, {})
    assert f"{bp.id}: running" in listing.content
    stopped = await tools["stop_process"].run(ctx, {"id": bp.id})
    assert stopped.content.startswith(f"Stopped {bp.id} (killed by signal 15)")
    assert not _group_alive(bp.pgid)  # the background `sleep 30` went with it
    assert "No background processes" in (await tools["list_processes"].run(ctx, {})).content
    await manager.close()


async def test_exit_code_is_reported(tmp_path: Path) -> None:
    manager = ProcessManager()
    ctx = ctx_for(tmp_path)
    bp = await manager.start(ctx, "echo bye; exit 3")
    await asyncio.wait_for(bp.proc.wait(), 10)
    await asyncio.wait_for(bp.buffer.closed.wait(), 10)
    assert manager.read(ctx, bp.id) == f"[{bp.id}: exited with code 3]\nbye\n"
    await manager.close()


async def test_output_buffer_is_bounded(tmp_path: Path) -> None:
    manager = ProcessManager(ProcessesConfig(buffer_bytes=4096))
    ctx = ctx_for(tmp_path)
    bp = await manager.start(ctx, "yes 0123456789 | head -c 200000; echo; echo END")
    await asyncio.wait_for(bp.buffer.closed.wait(), 10)
    assert len(bp.buffer.data) <= 2 * 4096
    out = manager.read(ctx, bp.id)
    assert "earlier bytes were dropped" in out and out.rstrip().endswith("END")
    assert len(out) < 4096 + 200
    await manager.close()


def test_ring_buffer_offsets() -> None:
    ring = RingBuffer(10)
    ring.data_received(b"abcdef")
    assert ring.since(0) == (b"abcdef", 6, 0)
    ring.data_received(b"ghijklmnopqrstuvwxyz")
    chunk, offset, lost = ring.since(6)
    assert (chunk, offset, lost) == (b"qrstuvwxyz", 26, 10)


async def test_processes_belong_to_their_conversation(tmp_path: Path) -> None:
    manager = ProcessManager(ProcessesConfig(max_per_session=1))
    a, b = ctx_for(tmp_path, "a"), ctx_for(tmp_path, "b")
    bp = await manager.start(a, "sleep 30")
    with pytest.raises(ToolError, match="no background process 'p1' in this conversation"):
        manager.read(b, bp.id)
    with pytest.raises(ToolError, match="no background process"):
        await manager.stop(b, bp.id)
    with pytest.raises(ToolError, match="already runs 1 background processes"):
        await manager.start(a, "sleep 30")
    assert await manager.stop_session("t:b") == 0
    await manager.close()
    assert not _group_alive(bp.pgid)


async def test_stop_process_ends_what_left_the_process_group(tmp_path: Path) -> None:
    manager = ProcessManager()
    ctx = ctx_for(tmp_path)
    bp = await manager.start(ctx, ESCAPE + "echo up; exec sleep 300")
    escapee = await escapee_of(bp)
    await wait_output(manager, ctx, bp.id, b"up")
    assert not is_dead(escapee)
    await manager.stop(ctx, bp.id)
    assert await wait_dead(escapee)
    await manager.close()


async def test_what_left_the_group_ends_when_the_process_exits(tmp_path: Path) -> None:
    manager = ProcessManager()
    ctx = ctx_for(tmp_path)
    bp = await manager.start(ctx, ESCAPE + "echo bye")
    escapee = await escapee_of(bp)
    await asyncio.wait_for(bp.proc.wait(), 10)
    assert bp.proc.returncode == 0
    assert await wait_dead(escapee)
    await manager.close()


# --- end to end: /stop and /new end a conversation's processes -----------------------------------


def responder(request: FakeRequest) -> Reply:
    result = request.last_tool_result()
    if result is not None:
        return Reply(text=f"result: {result}")
    return Reply(tool_calls=[{"name": "start_process", "arguments": {"command": "echo up; exec sleep 300"}}])


@pytest.mark.parametrize("command", ["/stop", "/new"])
async def test_stop_and_new_end_the_conversations_processes(home: Path, command: str) -> None:
    async with FakeLLMServer(responder=responder) as server:
        channel = ChatChannel()
        llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
        app = build_app(home, channel, llm, agent={"tools": ["*_process*"], "approvals": {"allow": ["start_process"]}})
        async with app:
            await channel.say("start a server", chat="c1")
            await channel.say("start a server", chat="c2")
            await channel.wait_for(lambda: any(t.startswith("result: Started p") for t in channel.texts("c1"))
                                   and any(t.startswith("result: Started p") for t in channel.texts("c2")))
            mine = list(app.protection.processes.of("test:c1").values())
            theirs = list(app.protection.processes.of("test:c2").values())
            assert len(mine) == 1 and len(theirs) == 1
            await channel.say(command, chat="c1")
            await channel.wait_for(lambda: any(t in ("Stopped.", "Started a new conversation. The previous one was "
                                                     "archived.") for t in channel.texts("c1")))
            await asyncio.wait_for(mine[0].proc.wait(), 10)
            assert mine[0].proc.returncode == -15
            # The other conversation's process is untouched.
            assert theirs[0].proc.returncode is None and _group_alive(theirs[0].pgid)
            assert app.protection.processes.of("test:c1") == {}
        # Shutting the agent down stops the rest.
        assert theirs[0].proc.returncode is not None and not _group_alive(theirs[0].pgid)


async def test_stop_with_only_a_background_process_says_stopped(home: Path) -> None:
    async with FakeLLMServer(responder=responder) as server:
        channel = ChatChannel()
        llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
        app = build_app(home, channel, llm, agent={"tools": ["start_process"], "approvals": {"allow": ["*"]}})
        async with app:
            await channel.say("start a server")
            await channel.wait_for(lambda: any(t.startswith("result: Started p") for t in channel.texts()))
            await channel.say("/stop")  # no turn is running, but a process is
            await channel.wait_for(lambda: "Stopped." in channel.texts())
            await channel.say("/stop")
            await channel.wait_for(lambda: "Nothing to stop." in channel.texts())
    assert os.path.isdir(home / "workspace")


def escaping_responder(request: FakeRequest) -> Reply:
    result = request.last_tool_result()
    if result is not None:
        return Reply(text=f"result: {result}")
    return Reply(tool_calls=[{"name": "start_process", "arguments": {"command": ESCAPE + "echo up; exec sleep 300"}}])


@pytest.mark.parametrize("command", ["/stop", "/new"])
async def test_stop_new_and_shutdown_end_what_left_the_process_group(home: Path, command: str) -> None:
    async with FakeLLMServer(responder=escaping_responder) as server:
        channel = ChatChannel()
        llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
        app = build_app(home, channel, llm, agent={"tools": ["*_process*"], "approvals": {"allow": ["start_process"]}})
        async with app:
            await channel.say("start a server", chat="c1")
            await channel.say("start a server", chat="c2")
            await channel.wait_for(lambda: any(t.startswith("result: Started p") for t in channel.texts("c1"))
                                   and any(t.startswith("result: Started p") for t in channel.texts("c2")))
            [mine] = app.protection.processes.of("test:c1").values()
            [theirs] = app.protection.processes.of("test:c2").values()
            my_escapee, their_escapee = await escapee_of(mine), await escapee_of(theirs)
            await channel.say(command, chat="c1")
            assert await wait_dead(my_escapee)
            assert not is_dead(their_escapee)  # the other conversation's is untouched
        assert await wait_dead(their_escapee)  # shutting the agent down ends it
