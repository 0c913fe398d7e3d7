"""The CLI as a user meets it: real processes, and `operator-use chat` in a real terminal (tmux)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.deps import require_binary

ROOT = Path(__file__).resolve().parent.parent


def cli(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "OPERATOR_HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "operator_use", *args], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_init_is_idempotent(home: Path) -> None:
    first = cli(home, "init")
    assert first.returncode == 0, first.stderr
    assert (home / "config.yaml").exists() and (home / "workspace" / "SOUL.md").exists()
    (home / "workspace" / "SOUL.md").write_text("my own soul")
    second = cli(home, "init")
    assert second.returncode == 0 and "Kept existing" in second.stdout
    assert (home / "workspace" / "SOUL.md").read_text() == "my own soul"


def test_config_prints_secrets_masked(home: Path) -> None:
    result = cli(home, "config", env={"OPERATOR_LLM__API_KEY": "sk-very-secret-123", "OPERATOR_LLM__PROVIDER": "openai"})
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
    code = ("import sys, time; t=time.perf_counter(); import operator_use.cli.main; "
            "heavy=[m for m in ('openai','anthropic','telegram','discord','slack_bolt','twitchio','aiomqtt',"
            "'faster_whisper','av','aiohttp') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    help_run = subprocess.run([sys.executable, "-m", "operator_use", "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    assert help_run.returncode == 0 and "chat" in help_run.stdout and "sessions" in help_run.stdout


# --- the terminal chat in tmux ------------------------------------------------------------------


class Tmux:
    def __init__(self, session: str) -> None:
        self.session = session

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, timeout=30).stdout

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", text)
        self.run("send-keys", "-t", self.session, "Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-t", self.session, "-p", "-S", "-200")

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """Poll the screen until `pattern` shows: waiting on what the user would see, not on a timer."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.MULTILINE)
        while True:
            screen = self.screen()
            if regex.search(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared; screen:\n{screen}")
            time.sleep(0.05)


@pytest.fixture
def fake_llm_process() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.llm_server", "--port", "0", "--delay", "0.01"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
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
    env = (f"env -i PATH={os.environ['PATH']} HOME={home} OPERATOR_HOME={home} LANG=C.UTF-8 TERM=xterm "
           f"OPERATOR_LLM__PROVIDER=openai OPERATOR_LLM__MODEL=fake-model OPERATOR_LLM__BASE_URL={fake_llm_process} "
           f"OPENAI_API_KEY=sk-test-key")
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
