"""What doctor and the first start say about the model: the model's name once, no credential from a URL's
query string, and no advice that contradicts the answer the server gave."""

from __future__ import annotations

from pathlib import Path

from operator_use.config import LLMConfig
from operator_use.providers.llm.setup import llm_from_config
from operator_use.security.redact import strip_url_credentials

from .fakes.llm_server import ErrorTurn, FakeLLMServer
from .support.agent_process import agent_env, run_cli
from .support.mqtt import free_port


def test_credentials_in_a_urls_query_string_are_masked() -> None:
    assert strip_url_credentials("http://h:1/v1?key=k-123&x=1") == "http://h:1/v1?key=***&x=1"
    assert strip_url_credentials("http://u:p@h/v1?api_key=sk-1#top") == "http://***@h/v1?api_key=***#top"
    assert strip_url_credentials("https://h/?Token=t1&access_token=t2") == "https://h/?Token=***&access_token=***"
    assert strip_url_credentials("https://h/?client_secret=s&password=p") == "https://h/?client_secret=***&password=***"
    assert strip_url_credentials("https://h/v1?model=llama&n=2") == "https://h/v1?model=llama&n=2"


async def test_doctor_never_prints_a_key_given_in_the_urls_query(home: Path) -> None:
    dead = free_port()
    url = f"http://127.0.0.1:{dead}/v1?api_key=querysecret123"
    env = agent_env(home, OPERATOR_LLM__PROVIDER="openai", OPERATOR_LLM__MODEL="m", OPERATOR_LLM__BASE_URL=url)
    text = await run_cli("doctor", env=env)
    shown = await run_cli("config", env=env)
    for result in (text, shown):
        assert "querysecret123" not in result.stdout + result.stderr, result.stdout
    assert f"ERR model: openai/m: cannot reach http://127.0.0.1:{dead}/v1?api_key=***" in text.stdout


async def test_doctor_names_the_model_once_in_its_error(home: Path) -> None:
    async with FakeLLMServer([ErrorTurn(status=500)] * 5) as server:
        env = agent_env(home, OPERATOR_LLM__BASE_URL=server.openai_base_url, OPERATOR_LLM__MODEL="m1")
        text = await run_cli("doctor", env=env)
    line = next(x.strip() for x in text.stdout.splitlines() if x.strip().startswith("ERR model:"))
    assert line.startswith(f"ERR model: openai-compatible/m1 at {server.openai_base_url}: "), line
    assert line.count("openai-compatible/m1") == 1, line


async def test_a_server_that_wants_a_key_is_not_said_to_be_down() -> None:
    async with FakeLLMServer(models=["m"], api_key="sk-right") as server:
        llm, reason = await llm_from_config(LLMConfig(base_url=server.openai_base_url), env={})
    assert llm is None
    assert "HTTP 401: the server wants an API key (set llm.api_key)" in reason
    assert "Set llm.api_key (OPERATOR_LLM__API_KEY)" in reason
    assert "Check that the server is running" not in reason
