"""The CLI as a user meets it: real processes, and `operator-use chat` in a real terminal (tmux)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from operator_use.channels.cli import NO_TERMINAL
from operator_use.homelock import HomeLock

from .fakes.llm_server import FakeLLMServer, echo_responder
from .support.agent_process import ROOT, agent_env, fake_model, run_cli_now, running_agent, web_chat
from .support.deps import require_binary
from .support.tmux import Tmux
from .support.web import chat_at


def cli(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "OPERATOR_HOME": str(home), "LANG": "C.UTF-8"}
    return run_cli_now(*args, env={**base, **(env or {})}, timeout=timeout)


def test_init_is_idempotent(home: Path) -> None:
    first = cli(home, "init")
    assert first.returncode == 0, first.stderr
    assert (home / "config.yaml").exists() and (home / "workspace" / "SOUL.md").exists()
    (home / "workspace" / "SOUL.md").write_text("my own soul")
    second = cli(home, "init")
    assert second.returncode == 0 and "Kept existing" in second.stdout
    assert (home / "workspace" / "SOUL.md").read_text() == "my own soul"


def test_init_writes_the_starter_config_readable_by_the_owner_only(home: Path) -> None:
    # Under the usual umask a plain write would make it 0644; the starter invites an api_key.
    previous = os.umask(0o022)
    try:
        result = cli(home, "init")
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((home / "config.yaml").stat().st_mode) == 0o600


def test_config_prints_secrets_masked(home: Path) -> None:
    result = cli(
        home, "config", env={"OPERATOR_LLM__API_KEY": "sk-very-secret-123", "OPERATOR_LLM__PROVIDER": "openai"}
    )
    assert result.returncode == 0, result.stderr
    assert "sk-very-secret-123" not in result.stdout
    assert "provider: openai" in result.stdout and "**********" in result.stdout


def test_invalid_config_names_the_offending_key(home: Path) -> None:
    (home / "config.yaml").write_text("agent:\n  max_iterations: lots\nchannels:\n  cli:\n    allow_from: 7\n")
    result = cli(home, "run")
    assert result.returncode == 2
    assert "agent.max_iterations" in result.stderr and "channels.cli.allow_from" in result.stderr
    env_result = cli(home, "config", env={"OPERATOR_AGENT__MAX_CONCURRENT_TURNS": "0"})
    assert env_result.returncode == 2 and "agent.max_concurrent_turns" in env_result.stderr


def test_unknown_config_key_is_refused(home: Path) -> None:
    (home / "config.yaml").write_text("agnet:\n  max_iterations: 3\n")
    result = cli(home, "config")
    assert result.returncode == 2 and "agnet" in result.stderr


def test_run_without_any_model_explains_what_to_set(home: Path) -> None:
    result = cli(home, "run", env={"OPERATOR_CHANNELS__WEB__ENABLED": "false"})
    assert result.returncode == 1
    assert "ANTHROPIC_API_KEY" in result.stderr and "OPENAI_API_KEY" in result.stderr
    assert "ollama" in result.stderr.lower()


def test_help_is_fast_and_imports_no_platform_sdk() -> None:
    code = (
        "import sys, time; t=time.perf_counter(); import operator_use.cli.main; "
        "heavy=[m for m in ('openai','anthropic','telegram','discord','slack_bolt','twitchio','aiomqtt',"
        "'faster_whisper','av','aiohttp','prompt_toolkit','rich') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    help_run = subprocess.run(
        [sys.executable, "-m", "operator_use", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0 and "chat" in help_run.stdout and "sessions" in help_run.stdout


# --- the terminal chat in tmux ------------------------------------------------------------------


@pytest.fixture
def fake_llm_process() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm_server", "--port", "0", "--delay", "0.01"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server is listening
    match = re.search(r"OpenAI: (http://\S+?)\)", line)
    assert match, line
    yield match.group(1)
    proc.terminate()
    proc.wait(10)


def test_chat_in_a_real_terminal(home: Path, fake_llm_process: str) -> None:
    require_binary("tmux")
    tmux = Tmux(f"opuse-{uuid.uuid4().hex[:8]}")
    env = (
        f"env -i PATH={os.environ['PATH']} HOME={home} OPERATOR_HOME={home} LANG=C.UTF-8 TERM=xterm "
        f"OPERATOR_LLM__PROVIDER=openai OPERATOR_LLM__MODEL=fake-model OPERATOR_LLM__BASE_URL={fake_llm_process} "
        f"OPENAI_API_KEY=sk-test-key"
    )
    command = f"cd {ROOT} && {env} {sys.executable} -m operator_use chat; echo EXIT=$?; sleep 60"
    tmux.run("new-session", "-d", "-s", tmux.session, "-x", "120", "-y", "40", command)
    try:
        tmux.wait_for(r"^you>")
        screen = tmux.screen()
        assert "Model: openai/fake-model" in screen
        tmux.type("hello from the terminal")
        tmux.wait_for(r"agent> You said: hello from the terminal\s*\n\s*\nyou>")
        tmux.type("/help")
        tmux.wait_for(r"/new - archive this conversation")
        tmux.type("/frobnicate")
        tmux.wait_for(r"Unknown command /frobnicate")
        tmux.type("/status")
        screen = tmux.wait_for(r"This conversation: 2 messages")
        assert "sk-test-key" not in screen
        tmux.run("send-keys", "-t", tmux.session, "C-d")
        tmux.wait_for(r"EXIT=0")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", tmux.session], capture_output=True)
    sessions = cli(home, "sessions", "list")
    assert "cli:terminal\t2 messages" in sessions.stdout
    shown = cli(home, "sessions", "show", "cli:terminal")
    assert "you: hello from the terminal" in shown.stdout and "agent: You said: hello from the terminal" in shown.stdout


@contextlib.contextmanager
def chatting(home: Path, model: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`operator-use chat` on a pseudo-terminal, once it has claimed the data home; stopped on the way out."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "OPERATOR_HOME": str(home), "LANG": "C.UTF-8", **model}
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "operator_use", "chat"],
        cwd=ROOT,
        env=env,
        text=True,
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    try:
        assert proc.stderr is not None
        # "Model: ..." is printed once the data home is claimed; each read blocks until the next line (or the end).
        seen = []
        while not (seen and seen[-1].startswith("Model: ")):
            seen.append(proc.stderr.readline())
            assert seen[-1], "".join(seen)
        yield proc
        proc.terminate()  # SIGTERM: the agent stops cleanly and lets go of the home
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)


def test_a_second_agent_on_the_same_home_is_refused_and_read_only_commands_still_work(
    home: Path, fake_llm_process: str
) -> None:
    model = {
        "OPERATOR_LLM__PROVIDER": "openai",
        "OPERATOR_LLM__MODEL": "fake-model",
        "OPERATOR_LLM__BASE_URL": fake_llm_process,
        "OPENAI_API_KEY": "sk-test-key",
        "OPERATOR_CHANNELS__WEB__ENABLED": "false",
    }
    with chatting(home, model) as first:
        second = cli(home, "run", env=model)
        assert second.returncode == 1
        assert (
            f"Another operator-use (pid {first.pid}) is already running on {home}; stop it or set "
            "OPERATOR_HOME to another directory."
        ) in second.stderr
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "OPERATOR_HOME": str(home), "LANG": "C.UTF-8"}
        readers = [
            subprocess.Popen(
                [sys.executable, "-m", "operator_use", *command],
                cwd=ROOT,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for command in (["sessions", "list"], ["config"], ["pairing", "list"], ["user", "list"])
        ]
        for reader in readers:
            _, err = reader.communicate(timeout=60)
            assert reader.returncode == 0, (reader.args, err)
    lock = HomeLock(home)
    lock.acquire()  # the first one stopped: the home is free again
    lock.release()


# --- bad input reaches a clear error ------------------------------------------------------------


@pytest.mark.parametrize("command", ["config", "run"])
def test_a_config_file_that_is_not_utf8_is_named_without_a_traceback(home: Path, command: str) -> None:
    (home / "config.yaml").write_bytes(b"llm:\n  model: caf\xe9\n")
    result = cli(home, command, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"{home / 'config.yaml'} is not UTF-8 text (byte 0xe9 at offset 17)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["config", "run"])
def test_a_variable_that_is_not_json_is_named_without_a_traceback(home: Path, command: str) -> None:
    result = cli(home, command, env={"OPERATOR_CHANNELS__CLI__ALLOW_FROM": "not json"}, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "OPERATOR_CHANNELS__CLI__ALLOW_FROM is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_billion_laughs_config_is_refused_and_anchors_still_work(home: Path) -> None:
    # Nine levels, each aliasing the one before nine times: 9**9 values from 800 bytes.
    levels = [
        f"l{i}: &l{i} {{" + ", ".join(f"k{j}: {f'*l{i - 1}' if i else 'lol'}" for j in range(9)) + "}" for i in range(9)
    ]
    (home / "config.yaml").write_text("\n".join(levels) + "\n")
    bomb = cli(home, "config", timeout=30)
    assert bomb.returncode == 2 and "expands to more than 100000 values" in bomb.stderr, bomb.stderr
    assert "Traceback" not in bomb.stderr
    (home / "config.yaml").write_text(
        "channels:\n  cli: &me {allow_from: [me, partner]}\n  web:\n    <<: *me\n    port: 9000\n"
    )
    fine = cli(home, "config", timeout=30)
    assert fine.returncode == 0, fine.stderr
    web = fine.stdout.split("\n  web:\n", 1)[1]
    assert "port: 9000" in web and "- partner" in web.split("admins:")[0]


# --- without a terminal ---------------------------------------------------------------------------


def test_chat_without_a_terminal_says_so(home: Path) -> None:
    result = cli(home, "chat", timeout=30)
    assert result.returncode == 1
    assert "operator-use chat needs a terminal, and stdin is not one" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stdin", ["devnull", "pipe", "closed"])
async def test_run_without_a_terminal_turns_the_terminal_chat_off_and_serves_the_web_chat(
    home: Path, stdin: str
) -> None:
    """`operator-use run </dev/null` (systemd, nohup), with a pipe (`docker run -i`) or no stdin at all."""
    streams = {
        "devnull": {"stdin": asyncio.subprocess.DEVNULL},
        "pipe": {"stdin": asyncio.subprocess.PIPE},
        "closed": {"stdin": None, "preexec_fn": lambda: os.close(0)},
    }[stdin]
    async with FakeLLMServer(responder=echo_responder()) as server:
        env = agent_env(
            home,
            **fake_model(server.openai_base_url),
            OPERATOR_CHANNELS__CLI__ENABLED="true",
            **web_chat(),
        )
        async with running_agent(env, **streams) as agent:  # type: ignore[arg-type]
            _, tab = await chat_at(agent.web_chat_url, "anyone there?")
            assert any(e.get("text") == "You said: anyone there?" for e in tab.events)
    stderr, out = agent.stderr, agent.stdout
    assert agent.proc.returncode == 0, stderr
    assert stderr.count(NO_TERMINAL) == 1 and "Traceback" not in stderr, stderr
    assert "you>" not in out  # no prompt printed to nobody
    assert NO_TERMINAL in (home / "logs" / "operator-use.log").read_text()
