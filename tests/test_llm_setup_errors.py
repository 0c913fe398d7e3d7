"""A configured API key is never paired with a provider that zero-config detection picked (an OpenAI key must
not be sent to Anthropic because ANTHROPIC_API_KEY is also set): `llm.api_key` without `llm.provider` or
`llm.base_url` stops the start with one specific error. The generic "No LLM found" advice names the config
file actually read (OPERATOR_HOME moves it) and `operator-use onboard`."""

from __future__ import annotations

from pathlib import Path

from operator_use.config import LLMConfig
from operator_use.providers.llm.setup import llm_from_config

from .support.agent_process import agent_env, run_cli

KEY_QUESTION = (
    "llm.api_key is set but not llm.provider (or llm.base_url): which service is it for? e.g. provider: openai"
)
NO_LLM = "No LLM found"


async def test_a_configured_key_is_not_paired_with_a_detected_provider() -> None:
    config = LLMConfig(api_key="sk-openai-1", model="gpt-4o")
    llm, reason = await llm_from_config(config, env={"ANTHROPIC_API_KEY": "sk-ant-1"})
    assert llm is None
    assert reason.startswith(KEY_QUESTION)
    assert NO_LLM not in reason


async def test_run_with_a_key_and_another_providers_variable_stops_with_the_question(tmp_path: Path) -> None:
    env = agent_env(
        tmp_path, OPERATOR_LLM__API_KEY="sk-openai-1", OPERATOR_LLM__MODEL="gpt-4o", ANTHROPIC_API_KEY="sk-ant-1"
    )
    result = await run_cli("run", env=env)
    assert result.returncode == 1
    assert KEY_QUESTION in result.stderr
    assert NO_LLM not in result.stderr
    assert "sk-openai-1" not in result.stderr


async def test_run_with_only_a_key_stops_with_the_question_not_the_generic_advice(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("llm:\n  api_key: sk-openai-1\n")
    result = await run_cli("run", env=agent_env(tmp_path))
    assert result.returncode == 1
    assert KEY_QUESTION in result.stderr
    assert NO_LLM not in result.stderr


async def test_the_generic_advice_names_the_config_file_read_and_onboard(tmp_path: Path) -> None:
    result = await run_cli("run", env=agent_env(tmp_path))
    assert result.returncode == 1
    assert NO_LLM in result.stderr
    assert f"name the provider in {tmp_path / 'config.yaml'}:" in result.stderr
    assert "~/.operator-use" not in result.stderr
    assert "operator-use onboard" in result.stderr
