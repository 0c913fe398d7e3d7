"""A configured secret never shows in logs (pytest's capture and a log file), tool outputs, the history
or the chat, across a turn whose tool fails with the secret in its error and an LLM call that fails 401
with the key in the provider's message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import BaseModel

from operator_use.agent.tools import Tool
from operator_use.config import load_config
from operator_use.orchestrator.orchestrator import LLM_AUTH
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.security.redact import MASK, Redactor, secret_values
from operator_use.tools.shell import shell_tools

from .fakes.llm_server import ErrorTurn, FakeLLMServer, Reply
from .support.apps import build_app
from .support.chat import ChatChannel

API_KEY = "sk-test-4f8e2d6c0b9a7e5c3a1f"
BOT_TOKEN = "123456:AAE-bot-token-abcdefghijkl"

log = logging.getLogger("tests.leaky")


class NoParams(BaseModel):
    pass


def leaky(ctx, p):  # type: ignore[no-untyped-def]
    log.error("calling upstream with token %s", API_KEY)
    raise RuntimeError(f"upstream refused Authorization: Bearer {API_KEY}")


async def test_secrets_stay_out_of_logs_tools_history_and_chat(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPERATOR_LLM__API_KEY", API_KEY)
    monkeypatch.setenv("OPERATOR_CHANNELS__WEB__TOKEN", BOT_TOKEN)
    caplog.set_level(logging.DEBUG)
    log_file = tmp_path / "agent.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    (home / "workspace").mkdir(parents=True)
    (home / "workspace" / "creds.txt").write_text(f"token={BOT_TOKEN}\n")
    script = [
        # Turn 1: a tool that logs and raises with the key, then the shell printing the env and a file.
        Reply(tool_calls=[{"name": "leaky", "arguments": {}}]),
        Reply(
            tool_calls=[
                {
                    "name": "run_shell",
                    "arguments": {
                        "command": 'echo "key=$OPERATOR_LLM__API_KEY"; env | grep -c OPERATOR_ ; cat creds.txt'
                    },
                }
            ]
        ),
        Reply(text="Both tools are done."),
        # Turn 2: the provider refuses the key and quotes it back, as real providers do (partially).
        ErrorTurn(status=401, message=f"Incorrect API key provided: {API_KEY}"),
    ]
    try:
        async with FakeLLMServer(script) as server:
            config = load_config(home=home)
            assert config.llm.api_key is not None and config.llm.api_key.get_secret_value() == API_KEY
            llm = OpenAILLM("fake-gpt", config.llm.api_key.get_secret_value(), base_url=server.openai_base_url)
            channel = ChatChannel()
            tools = [Tool("leaky", "Leaks.", NoParams, leaky), *shell_tools()]
            app = build_app(home, channel, llm, given_tools=tools, agent={"approvals": {"allow": ["run_shell"]}})
            async with app:
                await channel.say("use the tools")
                await channel.wait_for(lambda: "Both tools are done." in channel.texts())
                await channel.say("again")
                await channel.wait_for(lambda: LLM_AUTH in channel.texts())
            # The model saw the tool results, masked.
            tool_results = [m["content"] for r in server.requests for m in r["messages"] if m["role"] == "tool"]
            assert len(tool_results) >= 2
            assert any(MASK in t and "upstream refused" in t for t in tool_results)
            shell_result = next(t for t in tool_results if "key=" in t)
            assert "key=\n0\n" in shell_result  # scrubbed from the shell's environment
            assert f"token={MASK}" in shell_result  # and masked in what the command printed
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()

    # The secrets did go through the pipeline (so the checks below mean something)...
    assert all(c.headers.get("Authorization") == f"Bearer {API_KEY}" for c in server.calls)
    assert f"Incorrect API key provided: {MASK}" in caplog.text  # the 401, logged with its traceback
    assert f"calling upstream with token {MASK}" in caplog.text
    # ...and never came out.
    everything = {
        "caplog": caplog.text,
        "log file": log_file.read_text(encoding="utf-8"),
        "chat": "\n".join(p.text + "\n".join(p.edits) for p in channel.posted),
        "tool results": "\n".join(tool_results),
        "history": "\n".join(f.read_text() for f in (home / "sessions").rglob("*.jsonl")),
    }
    for where, text in everything.items():
        assert API_KEY not in text, f"API key leaked into {where}"
        assert BOT_TOKEN not in text, f"channel token leaked into {where}"
    assert MASK in everything["log file"] and MASK in everything["caplog"]


def test_secret_values_come_from_the_config_and_credential_variables() -> None:
    config = load_config(llm={"api_key": "config-key-123"}, channels={"web": {"token": "web-token-456"}})
    found = secret_values(
        config,
        {
            "OPENAI_API_KEY": "env-key-789",
            "HOME": "/root",
            "GITHUB_TOKEN": "ghp_abc123",
            "OPERATOR_LLM__API_KEY": "config-key-123",
            "SHORT_TOKEN": "abc",
        },
    )
    assert found == {"config-key-123", "web-token-456", "env-key-789", "ghp_abc123"}


def test_redactor_masks_longest_first() -> None:
    redact = Redactor(["abcdef", "abcdefghij"])
    assert redact("x abcdefghij y abcdef z") == f"x {MASK} y {MASK} z"
    assert Redactor()("nothing") == "nothing"
