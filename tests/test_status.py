"""`operator-use status`: a real `operator-use run` on MQTT (Mosquitto) answering on its control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from operator_use.control.client import ask
from operator_use.control.paths import bind_private, socket_path
from operator_use.homelock import HomeLock

from .fakes.llm_server import FakeLLMServer, Reply, echo_responder
from .support.agent_process import agent_env, fake_model, run_cli, running_agent
from .support.deps import require_binary, require_module
from .support.mqtt import Mosquitto, publish

IN = "operator/agent/in/"


@pytest.fixture
async def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_module("aiomqtt")
    require_binary("mosquitto_pub")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = Mosquitto(workdir)
    await b.start()
    yield b
    await b.stop()


async def status_until(home: Path, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    """Ask the agent again until its answer shows what the test waits for (a bound against hangs only)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await asyncio.to_thread(ask, home)
        if predicate(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched; last: {answer}")
        await asyncio.sleep(0.05)


async def test_status_without_a_running_agent_says_so(home: Path) -> None:
    result = await run_cli("status", env=agent_env(home))
    assert result.returncode == 1
    assert result.stderr.strip() == f"operator-use is not running (data home {home})"
    as_json = await run_cli("status", "--json", env=agent_env(home))
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "running": False,
        "home": str(home),
        "pid": None,
        "message": f"operator-use is not running (data home {home})",
    }


async def test_status_shows_channels_turns_in_flight_queues_model_and_uptime(home: Path, broker: Mosquitto) -> None:
    gate = asyncio.Event()
    async with FakeLLMServer([Reply(text="thinking about it", gate=gate)], responder=echo_responder()) as server:
        env = agent_env(
            home,
            **fake_model(server.openai_base_url),
            OPERATOR_CHANNELS__MQTT__ENABLED="true",
            OPERATOR_CHANNELS__MQTT__PORT=str(broker.port),
            OPERATOR_CHANNELS__MQTT__ALLOW_FROM='["alice"]',
        )
        async with running_agent(env) as agent:
            sock = socket_path(home)
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            await status_until(home, lambda s: s["channels"].get("mqtt") == "up")
            await publish(broker.port, IN + "alice", "first question")
            await server.wait_for_requests(1)  # the first turn is in flight, held mid-reply
            await publish(broker.port, IN + "alice", "second question")
            await status_until(home, lambda s: any(c["queued"] == 1 for c in s["conversations"]))

            result = await run_cli("status", "--json", env=env)
            assert result.returncode == 0, result.stderr
            info = json.loads(result.stdout)
            assert info["running"] is True and info["pid"] == agent.proc.pid and info["home"] == str(home)
            assert info["channels"] == {"mqtt": "up"}
            assert info["model"] == "openai/fake-model"
            assert info["turns_running"] == 1 and info["turns_done"] == 0
            assert info["conversations"] == [{"key": "mqtt:alice", "running": True, "queued": 1}]
            assert info["uptime"] > 0 and info["started_at"] <= time.time()

            text = await run_cli("status", env=env)
            assert text.returncode == 0, text.stderr
            assert f"running (pid {agent.proc.pid}) on {home}, up " in text.stdout
            assert "Model: openai/fake-model" in text.stdout
            assert "Channels: mqtt up" in text.stdout
            assert "Turns: 1 running, 0 done" in text.stdout
            assert "  mqtt:alice: turn running, 1 queued" in text.stdout

            gate.set()
            done = await status_until(home, lambda s: s["turns_done"] == 2)
            assert done["turns_running"] == 0 and done["conversations"] == []
        # Stopped: the socket is gone and status says so.
        assert not sock.exists()
        after = await run_cli("status", env=env)
        assert after.returncode == 1 and f"operator-use is not running (data home {home})" in after.stderr


async def test_a_deep_data_home_still_gets_its_control_socket(tmp_path: Path) -> None:
    """A Unix socket address holds ~107 bytes; a longer data home path must still work."""
    home = tmp_path / ("d" * 60) / ("e" * 60)
    home.mkdir(parents=True)
    assert len(str(socket_path(home))) > 108
    async with FakeLLMServer(responder=echo_responder()) as server:
        env = agent_env(home, **fake_model(server.openai_base_url))
        async with running_agent(env) as agent:
            result = await run_cli("status", "--json", env=env)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["pid"] == agent.proc.pid


# --- what the reviewer found ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def control_socket(home: Path, answer: bytes) -> AsyncIterator[None]:
    """Something answering on the data home's control socket with `answer` (another version, a bug...)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, sock=bind_private(socket_path(home)))  # any path length
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_an_answer_in_another_format_is_named_not_a_traceback(home: Path) -> None:
    other_version = json.dumps({"version": "9.9.9", "pid": 7, "state": "a newer shape"}).encode() + b"\n"
    async with control_socket(home, other_version):
        text = await run_cli("status", env=agent_env(home))
        as_json = await run_cli("status", "--json", env=agent_env(home))
    assert text.returncode == 1 and "Traceback" not in text.stderr, text.stderr
    assert "the running agent (version 9.9.9) answered in another format" in text.stderr
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["running"] is True and "version 9.9.9" in report["error"] and report["version"] == "9.9.9"

    async with control_socket(home, b'{"error": "unknown request"}\n'):
        error = await run_cli("status", env=agent_env(home))
    assert error.returncode == 1 and "Traceback" not in error.stderr
    assert "the running agent (version unknown) answered in another format: unknown request" in error.stderr


async def test_status_json_stays_json_for_a_garbled_answer_and_a_broken_config(home: Path) -> None:
    for garbled in (b"not json at all\n", b"[1, 2]\n"):
        async with control_socket(home, garbled):
            result = await run_cli("status", "--json", env=agent_env(home))
        assert result.returncode == 1
        report = json.loads(result.stdout)
        assert report["running"] is True and "did not answer properly" in report["error"]
    (home / "config.yaml").write_text("control: [unclosed\n")
    broken = await run_cli("status", "--json", env=agent_env(home))
    assert broken.returncode == 2
    report = json.loads(broken.stdout)
    assert report["running"] is False and "is not valid YAML" in report["error"]


async def test_a_stale_lock_naming_a_live_pid_is_not_a_running_agent(home: Path) -> None:
    # A crashed agent's .lock, its pid since reused (pid 1 is always alive): nobody holds the lock.
    (home / ".lock").write_text("1\n")
    result = await run_cli("status", env=agent_env(home))
    assert result.returncode == 1
    assert result.stderr.strip() == f"operator-use is not running (data home {home})"


async def test_a_held_lock_without_a_control_socket_is_an_agent_that_does_not_answer(home: Path) -> None:
    lock = HomeLock(home)
    lock.acquire()  # this test's process is the agent that holds the home and does not answer
    try:
        result = await run_cli("status", "--json", env=agent_env(home))
    finally:
        lock.release()
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["running"] is False and report["pid"] == os.getpid()
    assert f"(pid {os.getpid()}) holds data home {home} but does not answer" in report["message"]
