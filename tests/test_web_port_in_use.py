"""A web port already in use (another program, or another agent with its own data home) is not retried forever:
the web channel is `failed` with one ERROR naming the port and the setting, and `operator-use run` stops with
exit status 1 and that message, as it does for a channel whose extra is missing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from operator_use.bus.memory import MemoryBus
from operator_use.channels.web.channel import WebChannel
from operator_use.channels.web.config import WebConfig
from operator_use.gateway.gateway import Gateway

from .fakes.llm_server import FakeLLMServer, echo_responder
from .support.agent_process import agent_env, fake_model, run_cli, web_chat

HOLD = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@contextlib.asynccontextmanager
async def port_held_by_another_process() -> AsyncIterator[int]:
    """A real process listening on a loopback port until the test is done with it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        yield int(await asyncio.wait_for(proc.stdout.readline(), 30))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()


async def test_the_gateway_fails_the_web_channel_once_when_its_port_is_in_use() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    attempts = 0

    class Counted(WebChannel):
        async def connect(self) -> None:
            nonlocal attempts
            attempts += 1
            await super().connect()

    keep = Keep()
    logger = logging.getLogger("operator_use.gateway.gateway")
    logger.addHandler(keep)
    try:
        async with port_held_by_another_process() as port:
            channel = Counted(WebConfig(port=port), announce=None)
            gateway = Gateway(MemoryBus(), [channel], start_retry_base=0.001, start_retry_max=0.001)
            try:
                await gateway.start()
                # "failed", not "down" waiting for a retry: its start task has ended.
                assert gateway.status() == {"web": "failed"}
                assert attempts == 1
            finally:
                await gateway.stop()
    finally:
        logger.removeHandler(keep)
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in records]
    assert f"127.0.0.1:{port}: the port is already in use" in errors[0]
    assert "channels.web.port" in errors[0] and "OPERATOR_CHANNELS__WEB__PORT" in errors[0]
    assert gateway.failures["web"] in errors[0]


async def test_run_exits_1_naming_the_port_and_the_setting(tmp_path: Path) -> None:
    async with FakeLLMServer(responder=echo_responder()) as server, port_held_by_another_process() as port:
        env = agent_env(tmp_path, **fake_model(server.openai_base_url), **web_chat(port))
        result = await run_cli("run", env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"channel web cannot start: web chat cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "the port is already in use" in result.stderr
    assert "channels.web.port" in result.stderr and "OPERATOR_CHANNELS__WEB__PORT" in result.stderr
    assert "retrying" not in result.stderr and "Traceback" not in result.stderr
