"""Background processes: start, read, stop; per-conversation; stopped by /stop, /new and shutdown."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable
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


def escape(marker: str) -> str:
    """Leaves the command's session and process group (setsid), its parent exits at once: it used to be
    reparented to init and outlive stop_process, /stop, /new and shutdown. The command goes on once the
    escapee has started."""
    return f"setsid sh -c 'sleep {marker} & echo $! > esc.{marker}' & until [ -s esc.{marker} ]; do sleep 0.01; done; "


def processes() -> dict[int, tuple[int, list[bytes]]]:
    """Live (non-zombie) processes of the host: pid -> (parent pid, argv). Zombies stay where PID 1 does not
    reap. Pids are the host's: as root a command runs in a PID namespace of its own, it prints others."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            fields = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            found[int(name)] = (int(fields[1]), argv)
    return found


def alive_with(marker: str) -> list[int]:
    """Processes whose command line contains `marker` (this test process aside)."""
    return [pid for pid, (_, argv) in processes().items() if marker.encode() in b" ".join(argv) and pid != os.getpid()]


def sleepers(marker: str, below: int | None = None) -> list[int]:
    """`sleep <marker>` processes; with `below`, only those descending from that pid."""
    procs = processes()

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = procs[pid][0] if pid in procs else 0
            if pid == below:
                return True
        return False

    return [
        pid
        for pid, (_, argv) in procs.items()
        if argv[:2] == [b"sleep", marker.encode()] and (below is None or descends(pid))
    ]


async def until(condition: Callable[[], object], within: float = 10.0) -> None:
    """Poll until `condition()` is true, for at most `within` seconds (a bound, not a wait for time): the
    state of processes in /proc has no event to wait on."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def gone(marker: str) -> bool:
    await until(lambda: not alive_with(marker))
    return True


async def escaped(bp: BackgroundProcess, marker: str) -> int:
    """Wait until the escapee of escape(marker) started by `bp` runs; its host pid."""
    await until(lambda: sleepers(marker, below=bp.proc.pid))
    return sleepers(marker, below=bp.proc.pid)[0]


def is_dead(pid: int) -> bool:
    return pid not in processes()


async def wait_dead(pid: int) -> bool:
    await until(lambda: is_dead(pid))
    return True


MARKERS: list[str] = []


def new_marker() -> str:
    """A `sleep` duration no other process uses."""
    MARKERS.append(f"{random.randint(500, 999)}.{random.randint(10**8, 10**9)}")
    return MARKERS[-1]


@pytest.fixture(autouse=True)
def _kill_leftovers():
    """A failing test must not leave its processes running."""
    yield
    while MARKERS:
        for pid in alive_with(MARKERS.pop()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


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
    marker = new_marker()
    bp = await manager.start(ctx, escape(marker) + "echo up; exec sleep 300")
    await escaped(bp, marker)
    await wait_output(manager, ctx, bp.id, b"up")
    await manager.stop(ctx, bp.id)
    assert await gone(marker)
    await manager.close()


async def test_a_process_that_kills_its_supervisor_leaves_nothing_behind(tmp_path: Path) -> None:
    # Without a sandbox the command used to be able to kill reaper.py (same user): stop_process then
    # reached its process group only, and what had left it ran on. As root, the supervisor is its PID
    # namespace's init now.
    if os.geteuid() != 0:
        pytest.skip("a command of a non-root agent can still kill its supervisor (documented limit)")
    manager = ProcessManager()
    ctx = ctx_for(tmp_path)
    marker, last = new_marker(), new_marker()
    bp = await manager.start(ctx, escape(marker) + f"kill -9 $PPID; echo up; exec sleep {last}")
    await wait_output(manager, ctx, bp.id, b"up")
    await until(lambda: sleepers(marker))
    await manager.stop(ctx, bp.id)
    assert await gone(marker) and await gone(last)
    assert bp.proc.returncode == -signal.SIGTERM  # its supervisor was there to the end, and stopped it
    await manager.close()


async def test_what_left_the_group_ends_when_the_process_exits(tmp_path: Path) -> None:
    manager = ProcessManager()
    ctx = ctx_for(tmp_path)
    marker = new_marker()
    bp = await manager.start(ctx, escape(marker) + "echo bye")
    await asyncio.wait_for(bp.proc.wait(), 10)
    assert bp.proc.returncode == 0
    assert await gone(marker)
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
            await channel.wait_for(
                lambda: (
                    any(t.startswith("result: Started p") for t in channel.texts("c1"))
                    and any(t.startswith("result: Started p") for t in channel.texts("c2"))
                )
            )
            mine = list(app.protection.processes.of("test:c1").values())
            theirs = list(app.protection.processes.of("test:c2").values())
            assert len(mine) == 1 and len(theirs) == 1
            await channel.say(command, chat="c1")
            await channel.wait_for(
                lambda: any(
                    t in ("Stopped.", "Started a new conversation. The previous one was archived.")
                    for t in channel.texts("c1")
                )
            )
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


def escaping_responder(marker: str) -> Callable[[FakeRequest], Reply]:
    def respond(request: FakeRequest) -> Reply:
        result = request.last_tool_result()
        if result is not None:
            return Reply(text=f"result: {result}")
        return Reply(
            tool_calls=[{"name": "start_process", "arguments": {"command": escape(marker) + "echo up; exec sleep 300"}}]
        )

    return respond


@pytest.mark.parametrize("command", ["/stop", "/new"])
async def test_stop_new_and_shutdown_end_what_left_the_process_group(home: Path, command: str) -> None:
    marker = new_marker()  # both conversations' escapees: told apart by their session
    async with FakeLLMServer(responder=escaping_responder(marker)) as server:
        channel = ChatChannel()
        llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
        app = build_app(home, channel, llm, agent={"tools": ["*_process*"], "approvals": {"allow": ["start_process"]}})
        async with app:
            await channel.say("start a server", chat="c1")
            await channel.say("start a server", chat="c2")
            await channel.wait_for(
                lambda: (
                    any(t.startswith("result: Started p") for t in channel.texts("c1"))
                    and any(t.startswith("result: Started p") for t in channel.texts("c2"))
                )
            )
            [mine] = app.protection.processes.of("test:c1").values()
            [theirs] = app.protection.processes.of("test:c2").values()
            my_escapee, their_escapee = await escaped(mine, marker), await escaped(theirs, marker)
            await channel.say(command, chat="c1")
            assert await wait_dead(my_escapee)
            assert not is_dead(their_escapee)  # the other conversation's is untouched
        assert await wait_dead(their_escapee)  # shutting the agent down ends it
