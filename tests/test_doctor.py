"""`operator-use doctor` as a user runs it: a real process against a fake model server on 127.0.0.1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .fakes.llm_server import FakeLLMServer, echo_responder
from .support.agent_process import agent_env, fake_model, run_cli, running_agent, web_chat
from .support.blocked import blocked_env
from .support.deps import require_binary
from .support.mqtt import free_port

EVERY_CHECK = {
    "model",
    "channel web",
    "voice stt",
    "voice tts",
    "voice audio",
    "sandbox",
    "browser",
    "port",
    "data home",
    "config file",
}


def good_home(home: Path, base_url: str, port: int) -> None:
    home.chmod(0o700)
    config = home / "config.yaml"
    config.write_text(
        "llm:\n  provider: openai\n  model: fake-model\n  api_key: sk-doctor-secret\n"
        f"  base_url: {base_url}\n"
        f"channels:\n  cli:\n    enabled: false\n  web:\n    enabled: true\n    port: {port}\n"
    )
    config.chmod(0o600)


async def test_doctor_passes_a_good_configuration_and_says_where_settings_came_from(home: Path) -> None:
    port = free_port()
    async with FakeLLMServer(responder=echo_responder()) as server:
        good_home(home, server.openai_base_url, port)
        env = {**agent_env(home), "OPERATOR_AGENT__MAX_ITERATIONS": "7"}
        env.pop("OPERATOR_CHANNELS__WEB__ENABLED")  # the file says so
        env.pop("OPERATOR_CHANNELS__CLI__ENABLED")
        result = await run_cli("doctor", "--json", env=env)
        text = await run_cli("doctor", env=env)
        assert server.calls, "the model was really asked"
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["home"] == str(home)
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) >= EVERY_CHECK, set(checks)
    assert not [c for c in report["checks"] if c["ok"] is False]
    assert checks["model"]["ok"] is True and "openai/fake-model answers" in checks["model"]["detail"]
    assert checks["port"]["detail"] == f"127.0.0.1:{port} is free"
    assert checks["config file"]["ok"] is True and "holds secrets" in checks["config file"]["detail"]
    origins = {s["key"]: (s["value"], s["origin"]) for s in report["settings"]}
    assert origins["llm.model"] == ("fake-model", f"file {home / 'config.yaml'}")
    assert origins["agent.max_iterations"] == (7, "environment OPERATOR_AGENT__MAX_ITERATIONS")
    assert origins["llm.api_key"] == ("**********", f"file {home / 'config.yaml'}")
    assert origins["home"] == (str(home), "environment OPERATOR_HOME")
    assert "agent.max_concurrent_turns" not in origins  # a default nobody set
    assert "sk-doctor-secret" not in result.stdout + text.stdout
    assert text.returncode == 0, text.stdout
    assert "No problems found." in text.stdout
    assert "agent.max_iterations = 7  [environment OPERATOR_AGENT__MAX_ITERATIONS]" in text.stdout


async def test_doctor_names_every_problem_and_fails(home: Path, tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    home.chmod(0o777)
    config = home / "config.yaml"
    config.write_text(
        f"llm:\n  provider: openai\n  model: fake-model\n  api_key: sk-x\n  base_url: http://127.0.0.1:{dead}/v1\n"
        "channels:\n  telegram:\n    enabled: true\n    token: '123:secret-token'\n"
    )
    config.chmod(0o644)
    env = {**agent_env(home), **blocked_env(tmp_path / "no-telegram", "telegram")}
    result = await run_cli("doctor", env=env)
    as_json = await run_cli("doctor", "--json", env=env)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert f"ERR model: openai/fake-model: cannot reach http://127.0.0.1:{dead}/v1" in out
    assert "ERR channel telegram: python-telegram-bot is not installed (module telegram): " in out
    assert "pip install 'operator-use[telegram]' (with the Makefile: make run EXTRAS=web,telegram)" in out
    assert f"ERR data home: {home} is world-writable (mode drwxrwxrwx): chmod 700 {home}" in out
    assert f"ERR config file: {config} holds secrets and is readable by others" in out
    assert "4 problems: model, channel telegram, data home, config file" in out
    assert "secret-token" not in out and "Traceback" not in result.stderr
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    failed = {c["name"] for c in report["checks"] if c["ok"] is False}
    assert failed == {"model", "channel telegram", "data home", "config file"}


async def test_doctor_accepts_the_web_port_held_by_our_own_running_agent(home: Path) -> None:
    port = free_port()
    async with FakeLLMServer(responder=echo_responder()) as server:
        env = agent_env(home, **fake_model(server.openai_base_url), **web_chat(port))
        async with running_agent(env) as agent:
            result = await run_cli("doctor", "--json", env=env)
        checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
        assert checks["port"] == {
            "name": "port",
            "ok": True,
            "detail": f"127.0.0.1:{port} is used by this operator-use (pid {agent.proc.pid})",
        }


# --- what the reviewer found ----------------------------------------------------------------------


async def test_doctor_and_config_never_print_a_password_written_into_a_url(home: Path) -> None:
    dead = free_port()
    url = f"http://admin:hunter2pass@127.0.0.1:{dead}/v1"
    env = agent_env(home, OPERATOR_LLM__PROVIDER="openai", OPERATOR_LLM__MODEL="m", OPERATOR_LLM__BASE_URL=url)
    text = await run_cli("doctor", env=env)
    as_json = await run_cli("doctor", "--json", env=env)
    shown = await run_cli("config", env=env)
    for result in (text, as_json, shown):
        assert "hunter2pass" not in result.stdout + result.stderr, result.stdout
    masked = f"http://***@127.0.0.1:{dead}/v1"
    assert f'llm.base_url = "{masked}"  [environment OPERATOR_LLM__BASE_URL]' in text.stdout
    assert f"ERR model: openai/m: cannot reach {masked}" in text.stdout
    report = json.loads(as_json.stdout)
    assert {s["key"]: s["value"] for s in report["settings"]}["llm.base_url"] == masked
    assert shown.returncode == 0 and f"base_url: {masked}" in shown.stdout


def test_url_credentials_are_stripped_wherever_they_are() -> None:
    from operator_use.security.redact import strip_url_credentials, strip_url_credentials_in

    assert (
        strip_url_credentials("see http://u:p@h:1/x and mqtts://bob@broker")
        == "see http://***@h:1/x and mqtts://***@broker"
    )
    assert strip_url_credentials("https://u:p@ss@host/v1") == "https://***@host/v1"  # an unencoded @ in the password
    assert strip_url_credentials("mail bob@example.com, https://h/p@x") == "mail bob@example.com, https://h/p@x"
    assert strip_url_credentials_in({"a": ["http://u:p@h"], "b": 3}) == {"a": ["http://***@h"], "b": 3}


async def test_a_check_that_raises_becomes_a_failed_check_and_the_report_goes_on(home: Path) -> None:
    require_binary("bwrap")  # the sandbox check is the one that looks at the workspace
    workspace = home / ("w" * 300)  # one component longer than NAME_MAX: stat() raises ENAMETOOLONG
    env = agent_env(
        home,
        OPERATOR_AGENT__WORKSPACE=str(workspace),
        OPERATOR_LLM__PROVIDER="openai",
        OPERATOR_LLM__MODEL="m",
        OPERATOR_LLM__BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    )
    text = await run_cli("doctor", env=env)
    as_json = await run_cli("doctor", "--json", env=env)
    assert "Traceback" not in text.stderr + as_json.stderr, text.stderr
    assert text.returncode == 1 and as_json.returncode == 1
    assert "ERR sandbox: could not be checked: [Errno 36] File name too long" in text.stdout, text.stdout
    checks = {c["name"]: c for c in json.loads(as_json.stdout)["checks"]}
    assert checks["sandbox"]["ok"] is False
    assert {"browser", "data home"} <= set(checks)  # the checks after it still ran


async def test_json_output_stays_json_when_the_configuration_is_broken(home: Path) -> None:
    (home / "config.yaml").write_text("llm: [unclosed\n")
    doctor = await run_cli("doctor", "--json", env=agent_env(home))
    assert doctor.returncode == 2
    report = json.loads(doctor.stdout)
    assert report["ok"] is False and report["checks"][0]["name"] == "config"
    assert "is not valid YAML" in report["checks"][0]["detail"]
    (home / "config.yaml").write_text("agent:\n  max_iterations: many\n")
    invalid = await run_cli("doctor", "--json", env=agent_env(home))
    assert invalid.returncode == 2
    assert "agent.max_iterations" in json.loads(invalid.stdout)["checks"][0]["detail"]


async def test_the_web_port_counts_as_ours_only_while_our_web_channel_is_up(home: Path) -> None:
    import socket

    from operator_use.cli.doctor import _port
    from operator_use.config import load_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = load_config(home=home, channels={"web": {"enabled": True, "port": port}})
        for state in ("down", "starting", "failed"):
            # Our agent could not bind it either: whoever holds it, it is not us.
            check = _port(config, {"pid": 4242, "channels": {"web": state}})
            assert check is not None and check.ok is False, (state, check)
            assert "used by another program" in check.detail
        ours = _port(config, {"pid": 4242, "channels": {"web": "up"}})
        assert ours is not None and ours.ok is True and "pid 4242" in ours.detail


def test_a_group_writable_data_home_is_a_problem(home: Path) -> None:
    from operator_use.cli.doctor import _permissions
    from operator_use.config import load_config

    home.chmod(0o770)
    checks = {c.name: c for c in _permissions(load_config(home=home))}
    assert checks["data home"].ok is False
    assert checks["data home"].detail == f"{home} is group-writable (mode drwxrwx---): chmod 700 {home}"


def test_a_section_given_as_json_owns_only_its_own_keys(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from operator_use.cli.doctor import settings_origins
    from operator_use.config import load_config

    (home / "config.yaml").write_text("llm:\n  provider: openai\n  max_tokens: 999\n")
    monkeypatch.setenv("OPERATOR_LLM", '{"model": "from-json", "timeout": 33}')
    origins = {s.key: (s.value, s.origin) for s in settings_origins(load_config())}
    assert origins["llm.model"] == ("from-json", "environment OPERATOR_LLM")
    assert origins["llm.timeout"] == (33, "environment OPERATOR_LLM")
    assert origins["llm.provider"] == ("openai", f"file {home / 'config.yaml'}")
    assert origins["llm.max_tokens"] == (999, f"file {home / 'config.yaml'}")


def test_doctor_and_run_agree_on_text_to_speech_without_pyav(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from operator_use.cli.doctor import _voice
    from operator_use.config import load_config
    from operator_use.voice.setup import NO_PYAV, make_synthesizer

    require_binary("espeak-ng")
    monkeypatch.setitem(sys.modules, "av", None)  # this Python cannot import PyAV (find_spec says so too)
    for provider, expected in (("espeak", False), ("auto", None)):
        config = load_config(home=home, voice={"tts": {"provider": provider}})
        assert make_synthesizer(config.voice) is None  # what `run` builds
        checks = {c.name: c for c in _voice(config)}
        assert checks["voice tts"].ok is expected, checks["voice tts"]
        assert checks["voice tts"].detail == NO_PYAV


async def test_doctor_probes_give_up_after_their_short_time(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from operator_use.cli import doctor
    from operator_use.config import load_config

    from .test_probes import silent_server

    assert doctor.PROBE_TIMEOUT <= 15
    monkeypatch.setattr(doctor, "PROBE_TIMEOUT", 0.5)  # the same path, without a 15 s test
    async with silent_server() as url:
        config = load_config(home=home, llm={"provider": "openai", "model": "m", "base_url": url, "api_key": "k"})
        checks = {c.name: c for c in await doctor.diagnose(config)}
    assert checks["model"].ok is False and "within 0.5 seconds" in checks["model"].detail, checks["model"]
