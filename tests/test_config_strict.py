"""Strict configuration: a key no setting has, at any depth, stops the start naming the key, where it was set
and the setting meant; closed sets (log_level, llm.provider, voice.mode...) are checked at load, so
`operator-use config` reports what `run` would; every message is plain words, no pydantic jargon."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from operator_use.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
JARGON = ("Value error", "Extra inputs", "Input should be", "pydantic", "errors.pydantic.dev", "Traceback")

# (config file, key named, suggestion, the same through a variable, the variable's suggested name)
TYPOS = [
    ("llm:\n  modle: gpt-4o\n", "llm.modle", '"model"', "OPERATOR_LLM__MODLE", "OPERATOR_LLM__MODEL"),
    (
        "agent:\n  max_concurent_turns: 3\n",
        "agent.max_concurent_turns",
        '"max_concurrent_turns"',
        "OPERATOR_AGENT__MAX_CONCURENT_TURNS",
        "OPERATOR_AGENT__MAX_CONCURRENT_TURNS",
    ),
    (
        "channels:\n  telegarm:\n    token: '123:abc'\n",
        "channels.telegarm",
        '"telegram"',
        "OPERATOR_CHANNELS__TELEGARM__TOKEN",
        "OPERATOR_CHANNELS__TELEGRAM__TOKEN",
    ),
    (
        "channels:\n  telegram:\n    tokn: '123:abc'\n",
        "channels.telegram.tokn",
        '"token"',
        "OPERATOR_CHANNELS__TELEGRAM__TOKN",
        "OPERATOR_CHANNELS__TELEGRAM__TOKEN",
    ),
    (
        "voice:\n  tts:\n    provder: piper\n",
        "voice.tts.provder",
        '"provider"',
        "OPERATOR_VOICE__TTS__PROVDER",
        "OPERATOR_VOICE__TTS__PROVIDER",
    ),
    (
        "tools:\n  web_fetch:\n    allow_privat: true\n",
        "tools.web_fetch.allow_privat",
        '"allow_private"',
        "OPERATOR_TOOLS__WEB_FETCH__ALLOW_PRIVAT",
        "OPERATOR_TOOLS__WEB_FETCH__ALLOW_PRIVATE",
    ),
    (
        "security:\n  strangers:\n    brust: 4\n",
        "security.strangers.brust",
        '"burst"',
        "OPERATOR_SECURITY__STRANGERS__BRUST",
        "OPERATOR_SECURITY__STRANGERS__BURST",
    ),
    (
        "agent:\n  approvals:\n    alow: [run_shell]\n",
        "agent.approvals.alow",
        '"allow"',
        "OPERATOR_AGENT__APPROVALS__ALOW",
        "OPERATOR_AGENT__APPROVALS__ALLOW",
    ),
]


def no_jargon(text: str) -> None:
    for word in JARGON:
        assert word not in text, text


def problem(**env: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with pytest.raises(ConfigError) as caught:
            load_config()
    message = str(caught.value)
    no_jargon(message)
    return message


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "OPERATOR_HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-m", "operator_use", *args],
        cwd=ROOT,
        env={**base, "OPERATOR_CHANNELS__WEB__ENABLED": "false", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


# --- unknown keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, key, meant, variable, meant_variable", TYPOS, ids=[t[1] for t in TYPOS])
def test_an_unknown_key_in_the_file_is_named_with_the_setting_meant(
    home: Path, text: str, key: str, meant: str, variable: str, meant_variable: str
) -> None:
    (home / "config.yaml").write_text(text)
    message = problem()
    assert f"Invalid configuration in {home / 'config.yaml'}:" in message
    assert f"  {key}: unknown setting; did you mean {meant}?" in message


@pytest.mark.parametrize("text, key, meant, variable, meant_variable", TYPOS, ids=[t[1] for t in TYPOS])
def test_an_unknown_key_in_a_variable_names_the_variable_and_the_right_one(
    home: Path, text: str, key: str, meant: str, variable: str, meant_variable: str
) -> None:
    message = problem(**{variable: "1"})
    assert "OPERATOR_* environment variables" in message
    assert f"  {variable} ({key}): unknown setting; did you mean {meant_variable}?" in message


def test_keys_inside_list_items_and_json_variables_are_checked(home: Path) -> None:
    (home / "config.yaml").write_text(
        "llm:\n  fallbacks:\n    - {provider: openai, model: a}\n    - {provider: groq, modle: b}\n"
    )
    assert '  llm.fallbacks[1].modle: unknown setting; did you mean "model"?' in problem()
    (home / "config.yaml").unlink()
    message = problem(OPERATOR_LLM__FALLBACKS='[{"provider": "openai", "modle": "b"}]')
    assert '  OPERATOR_LLM__FALLBACKS (llm.fallbacks[0].modle): unknown setting; did you mean "model"?' in message
    message = problem(OPERATOR_LLM='{"modle": "b"}')
    assert '  OPERATOR_LLM (llm.modle): unknown setting; did you mean "model"?' in message


def test_keys_under_named_roles_are_checked(home: Path) -> None:
    (home / "config.yaml").write_text("security:\n  roles:\n    family:\n      admn: true\n")
    assert '  security.roles.family.admn: unknown setting; did you mean "admin"?' in problem()


def test_an_unknown_key_with_nothing_close_lists_the_settings_there(home: Path) -> None:
    (home / "config.yaml").write_text("voice:\n  tts:\n    zzz: 1\n")
    message = problem()
    assert "  voice.tts.zzz: unknown setting; the settings here are provider, voice, model," in message


def test_file_and_variable_problems_are_reported_together(home: Path) -> None:
    (home / "config.yaml").write_text("llm:\n  modle: x\n")
    message = problem(OPERATOR_AGENT__MAX_ITERATIONS="0")
    assert f"Invalid configuration in {home / 'config.yaml'}:\n  llm.modle: unknown setting" in message
    assert "  OPERATOR_AGENT__MAX_ITERATIONS (agent.max_iterations): must be at least 1 (got 0)" in message


@pytest.mark.parametrize(
    "name, hint",
    [
        ("OPERATOR_FOO", "the settings are home, llm, agent, channels"),
        ("OPERATOR_LOGLEVEL", "did you mean OPERATOR_LOG_LEVEL?"),
        ("OPERATOR_LMM__MODEL", "did you mean OPERATOR_LLM?"),
    ],
)
def test_an_operator_variable_for_no_setting_is_named(home: Path, name: str, hint: str) -> None:
    message = problem(**{name: "x"})
    assert message.startswith(f"{name}: not an operator-use setting (") and hint in message


def test_every_configuration_model_refuses_unknown_keys() -> None:
    """Structural: a section added later without the strict base would silently ignore misspelt keys again."""
    seen: set[type[BaseModel]] = set()

    def visit(tp: Any) -> Iterator[type[BaseModel]]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.add(tp)
                yield tp
                for field in tp.model_fields.values():
                    yield from visit(field.annotation)
            return
        if get_origin(tp) is not None:
            for arg in get_args(tp):
                yield from visit(arg)

    models = list(visit(Config))
    assert len(models) > 20  # the walk reaches channels, tools, security, voice...
    lax = [m.__name__ for m in models if m.model_config.get("extra") != "forbid"]
    assert lax == []


# --- closed sets and ranges ------------------------------------------------------------------------

CLOSED = [
    ("log_level: LOUD\n", 'log_level: "LOUD" is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL'),
    ("llm:\n  provider: opnai\n", 'llm.provider: "opnai" is not one of anthropic, openai, groq'),
    (
        "llm:\n  fallbacks:\n    - {provider: claud}\n",
        'llm.fallbacks[0].provider: "claud" is not one of anthropic, openai',
    ),
    ("llm:\n  base_url: localhost:8000\n", 'llm.base_url: "localhost:8000" is not an http:// or https:// URL'),
    ("voice:\n  mode: sometimes\n", 'voice.mode: "sometimes" is not one of off, when_spoken, always'),
    ("voice:\n  tts:\n    provider: festival\n", 'voice.tts.provider: "festival" is not one of auto, piper, espeak'),
    ("voice:\n  stt:\n    provider: google\n", 'voice.stt.provider: "google" is not one of local, openai, none'),
    ("channels:\n  mqtt:\n    qos: 7\n", "channels.mqtt.qos: 7 is not one of 0, 1, 2"),
    ("tools:\n  shell:\n    isolation: docker\n", 'tools.shell.isolation: "docker" is not one of auto, bwrap, off'),
    ("agent:\n  max_iterations: 0\n", "agent.max_iterations: must be at least 1 (got 0)"),
    ("agent:\n  max_iterations: 501\n", "agent.max_iterations: must be at most 500 (got 501)"),
    ("agent:\n  max_iterations: lots\n", 'agent.max_iterations: must be a whole number (got "lots")'),
    ("agent:\n  sandbox: maybe\n", 'agent.sandbox: must be true or false (got "maybe")'),
    ("agent:\n  tools: 5\n", 'agent.tools: must be a list (got 5); or 5 is not "*"'),
    ("channels:\n  cli:\n    allow_from: 7\n", "channels.cli.allow_from: must be a list (got 7)"),
    ("channels: 3\n", "channels: must be a section of settings (key: value lines) (got 3)"),
    ("tools:\n  web_fetch:\n    timeout: 0\n", "tools.web_fetch.timeout: must be more than 0 (got 0)"),
    ("llm:\n  fallbacks:\n    - {model: x}\n", "llm.fallbacks[0].provider: is required"),
]


@pytest.mark.parametrize("text, line", CLOSED, ids=[c[1].split(":")[0] for c in CLOSED])
def test_closed_sets_and_ranges_are_checked_at_load_in_plain_words(home: Path, text: str, line: str) -> None:
    (home / "config.yaml").write_text(text)
    assert f"\n  {line}" in problem()


def test_secret_values_are_not_repeated_in_messages(home: Path) -> None:
    (home / "config.yaml").write_text("channels:\n  telegram:\n    token: [987654321]\n")
    message = problem()
    assert "channels.telegram.token:" in message and "987654321" not in message


def test_log_level_is_accepted_in_any_case(home: Path) -> None:
    (home / "config.yaml").write_text("log_level: debug\n")
    assert load_config().log_level == "DEBUG"


def test_a_provider_alias_or_any_name_with_a_base_url_still_loads(home: Path) -> None:
    (home / "config.yaml").write_text(
        "llm:\n  provider: Claude\n  fallbacks:\n    - {provider: my-proxy, base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    config = load_config()
    assert config.llm.provider == "Claude" and config.llm.fallbacks[0].provider == "my-proxy"


# --- the commands ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["config", "run"])
@pytest.mark.parametrize("text, key, meant, variable, meant_variable", TYPOS[:3], ids=[t[1] for t in TYPOS[:3]])
def test_run_and_config_stop_with_status_2_on_an_unknown_key(
    home: Path, command: str, text: str, key: str, meant: str, variable: str, meant_variable: str
) -> None:
    (home / "config.yaml").write_text(text)
    result = cli(home, command)
    assert result.returncode == 2, result.stderr
    assert f"{key}: unknown setting; did you mean {meant}?" in result.stderr
    no_jargon(result.stderr)
    (home / "config.yaml").unlink()
    result = cli(home, command, env={variable: "1"})
    assert result.returncode == 2, result.stderr
    assert f"{variable} ({key}): unknown setting; did you mean {meant_variable}?" in result.stderr
    no_jargon(result.stderr)


@pytest.mark.parametrize("command", ["config", "run"])
@pytest.mark.parametrize(
    "text, variable, value, line",
    [
        (
            "log_level: LOUD\n",
            "OPERATOR_LOG_LEVEL",
            "LOUD",
            'log_level: "LOUD" is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL',
        ),
        ("llm:\n  provider: opnai\n", "OPERATOR_LLM__PROVIDER", "opnai", 'llm.provider: "opnai" is not one of'),
    ],
    ids=["log_level", "provider"],
)
def test_run_and_config_stop_with_status_2_on_a_value_outside_its_set(
    home: Path, command: str, text: str, variable: str, value: str, line: str
) -> None:
    (home / "config.yaml").write_text(text)
    result = cli(home, command)
    assert result.returncode == 2, result.stderr
    assert f"  {line}" in result.stderr and str(home / "config.yaml") in result.stderr
    no_jargon(result.stderr)
    (home / "config.yaml").unlink()
    result = cli(home, command, env={variable: value})
    assert result.returncode == 2, result.stderr
    key, rest = line.split(": ", 1)
    assert f"  {variable} ({key}): {rest}" in result.stderr
    no_jargon(result.stderr)


def test_an_unrelated_operator_variable_is_named_by_the_commands(home: Path) -> None:
    result = cli(home, "config", env={"OPERATOR_FOO": "1"})
    assert result.returncode == 2 and result.stderr.startswith("OPERATOR_FOO: not an operator-use setting")
    no_jargon(result.stderr)


def test_settings_given_by_an_embedding_program_are_checked_and_named_as_such(home: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(agent={"max_iteratons": 3})
    message = str(caught.value)
    assert message == (
        "Invalid configuration in the settings given to load_config:\n"
        '  agent.max_iteratons: unknown setting; did you mean "max_iterations"?'
    )


# --- what messages never repeat --------------------------------------------------------------------

SECRET = "sk-proj-Zq8tF3xK9mW2vL7pR4nB"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest.mark.parametrize(
    "text, line",
    [
        (f'channels: {{telegram: "{BOT_TOKEN}"}}\n', "channels.telegram: must be a section of settings"),
        (f"llm: {SECRET}\n", "llm: must be a section of settings"),
        (f"llm:\n  fallbacks: {SECRET}\n", "llm.fallbacks: must be a list (got text)"),
        (f"llm:\n  fallbacks: [{SECRET}]\n", "llm.fallbacks[0]: must be a section of settings"),
        (f"agent:\n  tools: {SECRET}\n", 'agent.tools: must be a list (got text); or this value is not "*"'),
        (f"channels:\n  cli:\n    allow_from: {SECRET}\n", "channels.cli.allow_from: must be a list (got text)"),
    ],
    ids=["channel", "llm", "fallbacks", "fallback", "tools", "allow_from"],
)
def test_a_token_where_a_section_or_list_belongs_is_not_repeated(home: Path, text: str, line: str) -> None:
    (home / "config.yaml").write_text(text)
    message = problem()
    assert f"  {line}" in message
    assert SECRET not in message and BOT_TOKEN not in message and "AAHdq" not in message and "sk-proj" not in message


def test_a_token_in_a_list_variable_is_not_repeated(home: Path) -> None:
    message = problem(OPERATOR_LLM__FALLBACKS=f'["{SECRET}"]')
    assert "  OPERATOR_LLM__FALLBACKS (llm.fallbacks[0]): must be a section of settings" in message
    assert "(got text)" in message and SECRET not in message


@pytest.mark.parametrize(
    "url, shown",
    [
        ("ftp://bob:hunter2@models.lan/v1", '"ftp://***@models.lan/v1" is not an http:// or https:// URL'),
        ("bob:hunter2@models.lan:8000/v1", '"***@models.lan:8000/v1" is not an http:// or https:// URL'),
        ("bob:hun@ter2@models.lan/v1", '"***@models.lan/v1" is not an http:// or https:// URL'),
    ],
)
def test_a_base_url_with_credentials_is_shown_without_them(home: Path, url: str, shown: str) -> None:
    for key, text in [
        ("llm.base_url", f"llm:\n  base_url: '{url}'\n"),
        ("llm.fallbacks[0].base_url", f"llm:\n  fallbacks:\n    - {{provider: x, base_url: '{url}'}}\n"),
    ]:
        (home / "config.yaml").write_text(text)
        message = problem()
        assert f"  {key}: {shown}" in message
        assert "hunter2" not in message and "ter2" not in message and "bob" not in message


def test_credentials_in_a_long_quoted_url_are_masked_before_it_is_shortened(home: Path) -> None:
    url = "https://bob:hunter2@" + "h" * 80 + ".example/v1"
    (home / "config.yaml").write_text(f"agent:\n  max_iterations: '{url}'\n")
    message = problem()
    assert 'agent.max_iterations: must be a whole number (got "https://***@hhh' in message
    assert "hunter2" not in message and "bob" not in message


# --- keys that are not text ----------------------------------------------------------------------

NON_TEXT_KEYS = [
    ("1: x\n", "key 1 at the top level is not a setting name"),
    ("true: 1\n", "key true at the top level is not a setting name"),
    ("null: 1\n", "key null at the top level is not a setting name"),
    ("llm:\n  1: x\n", "key 1 under llm is not a setting name"),
    ("channels:\n  telegram:\n    yes: 1\n", "key true under channels.telegram is not a setting name"),
    ("llm:\n  fallbacks:\n    - {provider: openai, 2: x}\n", "key 2 under llm.fallbacks[0] is not a setting name"),
]


@pytest.mark.parametrize("text, line", NON_TEXT_KEYS, ids=[t[1] for t in NON_TEXT_KEYS])
def test_a_key_that_is_not_text_is_named_and_refused_with_status_2(home: Path, text: str, line: str) -> None:
    (home / "config.yaml").write_text(text)
    result = cli(home, "config")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{home / 'config.yaml'}: {line}"), result.stderr
    no_jargon(result.stderr)
    assert "Keys should be strings" not in result.stderr and "keywords must be strings" not in result.stderr


# --- numbers -------------------------------------------------------------------------------------

NUMBERS = [
    ("llm:\n  max_tokens: 0\n", "llm.max_tokens: must be at least 1"),
    ("llm:\n  max_tokens: -5\n", "llm.max_tokens: must be at least 1"),
    ("llm:\n  context_window: 0\n", "llm.context_window: must be at least 1 (got 0)"),
    ("llm:\n  timeout: 0\n", "llm.timeout: must be more than 0 (got 0)"),
    ("llm:\n  timeout: -1.5\n", "llm.timeout: must be more than 0 (got -1.5)"),
    ("llm:\n  timeout: .nan\n", "llm.timeout: must be a finite number (got nan)"),
    ("llm:\n  timeout: .inf\n", "llm.timeout: must be a finite number (got inf)"),
    ("llm:\n  circuit_failures: 0\n", "llm.circuit_failures: must be at least 1 (got 0)"),
    ("llm:\n  circuit_cooldown: -1\n", "llm.circuit_cooldown: must be at least 0 (got -1)"),
    ("llm:\n  circuit_cooldown: .nan\n", "llm.circuit_cooldown: must be a finite number (got nan)"),
    ("llm:\n  call_deadline: .inf\n", "llm.call_deadline: must be a finite number (got inf)"),
    ("voice:\n  stt:\n    timeout: .nan\n", "voice.stt.timeout: must be a finite number (got nan)"),
]


@pytest.mark.parametrize("text, line", NUMBERS, ids=[n[1].split(":")[0] + "=" + n[0].split()[-1] for n in NUMBERS])
def test_numeric_settings_refuse_nonsense(home: Path, text: str, line: str) -> None:
    (home / "config.yaml").write_text(text)
    assert f"\n  {line}" in problem()


def test_nan_and_infinity_from_a_variable_are_refused(home: Path) -> None:
    message = problem(OPERATOR_LLM__TIMEOUT="nan", OPERATOR_LLM__CIRCUIT_COOLDOWN="inf")
    assert "  OPERATOR_LLM__TIMEOUT (llm.timeout): must be a finite number" in message
    assert "  OPERATOR_LLM__CIRCUIT_COOLDOWN (llm.circuit_cooldown): must be a finite number" in message


def test_every_configuration_model_refuses_infinity_and_nan() -> None:
    """Structural, like the unknown-keys check: a float setting added later gets the same refusal."""
    seen: set[type[BaseModel]] = set()

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.add(tp)
                for field in tp.model_fields.values():
                    visit(field.annotation)
            return
        for arg in get_args(tp):
            visit(arg)

    visit(Config)
    lax = [m.__name__ for m in seen if m is not Config and m.model_config.get("allow_inf_nan") is not False]
    assert lax == []


# --- the variables -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["OPERATOR_HOME__X", "OPERATOR_LOG_LEVEL__X", "OPERATOR_log_level__x__y"])
def test_a_variable_below_a_setting_that_is_one_value_is_refused(home: Path, name: str) -> None:
    message = problem(**{name: "1"})
    head = "HOME" if "HOME" in name else "LOG_LEVEL"
    assert message.startswith(f"{name}: {head.lower()} is one value, not a section with settings below it; ")
    assert f"set OPERATOR_{head} instead" in message


def test_the_home_variable_in_any_case_is_the_home_whose_file_is_read(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from operator_use.config import data_home

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("log_level: DEBUG\n")
    monkeypatch.delenv("OPERATOR_HOME")
    monkeypatch.setenv("operator_home", str(other))
    config = load_config()
    assert config.home == data_home() == other
    assert config.log_level == "DEBUG"  # read from that directory's config.yaml


def test_an_empty_home_variable_means_the_default_for_the_file_and_the_setting(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from operator_use.config import data_home

    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OPERATOR_HOME", "")
    assert load_config().home == data_home() == home / ".operator-use"
