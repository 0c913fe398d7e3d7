"""The agent's secrets stay out of reach of the commands it runs without a sandbox.

- The agent's process is not dumpable, so another process of its user cannot read
  /proc/<agent pid>/environ (nor mem, nor go through /proc/<agent pid>/root).
- A command never holds a capability, so a root agent's command cannot read them either (root keeps
  CAP_SYS_PTRACE otherwise, which overrides the dumpable flag); as root it also runs in a PID namespace
  with a /proc of its own, where the agent's process does not appear at all.

The agent runs in a child process here: /proc/<pid>/environ shows the environment a process started with,
so the fake key must be in it from the start. Linux only (/proc, prctl).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from operator_use.providers.llm.openai import OpenAILLM
from operator_use.security.hardening import is_dumpable

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.apps import build_app
from .support.chat import ChatChannel
from .support.deps import unavailable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process protections")

FAKE_KEY = "sk-fake-" + uuid.uuid4().hex
READ_ENVIRON = "echo agent=$(cut -d' ' -f2 /proc/{me}/stat); tr '\\0' '\\n' < /proc/{me}/environ"

# The agent: runs the real run_shell tool (no sandbox) and prints the tool's raw result (tool.run is called
# directly: no redaction). "capless": the agent first gives up its capabilities (root then stands for any
# user: same uid as its commands, no capability on either side).
AGENT = """
import asyncio, ctypes, os, sys
from pathlib import Path
from operator_use.agent.turn import TurnContext
from operator_use.messages import Address
from operator_use.tools.reaper import drop_capabilities
from operator_use.tools.shell import shell_tools

async def main():
    ws, command, capless = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "capless"
    if capless:
        drop_capabilities(ctypes.CDLL(None, use_errno=True))
    ctx = TurnContext(address=Address(channel="t", chat_id="1"), user_id="u", session_key="t:1", workspace=ws)
    result = await shell_tools()[0].run(ctx, {"command": command.format(me=os.getpid()), "timeout": 30})
    print(result.content)

asyncio.run(main())
"""


def run_agent(ws: Path, command: str, *, capless: bool = False) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "OPENAI_API_KEY": FAKE_KEY}
    done = subprocess.run(
        [sys.executable, "-c", AGENT, str(ws), command, "capless" if capless else "-"],
        env=env,
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_root_agents_command_cannot_read_the_agents_environment(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("needs root (CI runs as root)")
    out = run_agent(tmp_path, READ_ENVIRON)
    # As root the command has a PID namespace and a /proc of its own: the agent is not even there.
    assert "agent=(python" not in out and "No such file" in out, out
    assert FAKE_KEY not in out, out


def test_another_process_of_the_agents_user_cannot_read_its_environment(tmp_path: Path) -> None:
    out = run_agent(tmp_path, READ_ENVIRON, capless=True)
    assert "agent=(python" in out
    assert FAKE_KEY not in out and "Permission denied" in out, out


def test_commands_hold_no_capability(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("needs root (CI runs as root)")
    out = run_agent(tmp_path, "grep ^Cap /proc/self/status")
    caps = dict(line.split(":") for line in out.splitlines() if line.startswith("Cap"))
    assert set(caps) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}, out
    assert all(int(v, 16) == 0 for v in caps.values()), caps


def responder(request: FakeRequest) -> Reply:
    return Reply(text="hello")


async def test_app_start_makes_the_agent_undumpable(home: Path) -> None:
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE 1: as if no command had run in this process yet
    assert is_dumpable()
    async with FakeLLMServer(responder=responder) as server:
        llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
        async with build_app(home, ChatChannel(), llm):
            assert not is_dumpable()
