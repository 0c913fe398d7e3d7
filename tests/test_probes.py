"""The live probes of `onboard` and `doctor`, each against its fake platform: a good token, a bad one, and a
platform that does not answer (ok None: nothing was said about the token)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from operator_use.cli.probes import Probe, probe_channel, probe_model
from operator_use.config import Config, load_config

from .fakes.discord_server import FakeDiscord
from .fakes.llm_server import FakeLLMServer, echo_responder
from .fakes.slack_server import FakeSlackServer
from .fakes.telegram_server import TOKEN as TELEGRAM_TOKEN
from .fakes.telegram_server import FakeTelegram
from .fakes.twitch_server import CLIENT_ID, FakeTwitchServer
from .support.deps import require_binary, require_module
from .support.mqtt import Mosquitto, free_port


def config(home: Path, **sections: Any) -> Config:
    return load_config(home=home, **sections)


def dead_url(path: str = "") -> str:
    """A loopback address where nothing listens."""
    return f"http://127.0.0.1:{free_port()}{path}"


def assert_no_secret(probe: Probe, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in probe.detail


# --- the model --------------------------------------------------------------------------------------


def model(base_url: str, key: str = "sk-good") -> dict[str, Any]:
    return {"provider": "openai", "model": "fake-model", "base_url": base_url, "api_key": key}


async def test_model_probe_answers_with_a_good_key(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key="sk-good") as server:
        probe = await probe_model(config(home, llm=model(server.openai_base_url)))
    assert probe.ok is True, probe
    assert "openai/fake-model" in probe.detail
    assert server.requests[0]["max_completion_tokens"] == 16  # a minimal call, not a full turn


async def test_model_probe_says_the_key_was_refused(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key="sk-good") as server:
        probe = await probe_model(config(home, llm=model(server.openai_base_url, "sk-wrong-key")))
    assert probe.ok is False and "the API key was refused" in probe.detail, probe
    assert_no_secret(probe, "sk-wrong-key")


async def test_model_probe_on_an_anthropic_key(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key="sk-ant-good") as server:
        llm = {"provider": "anthropic", "model": "fake-model", "base_url": server.anthropic_base_url}
        good = await probe_model(config(home, llm={**llm, "api_key": "sk-ant-good"}))
        bad = await probe_model(config(home, llm={**llm, "api_key": "sk-ant-bad"}))
    assert good.ok is True, good
    assert bad.ok is False and "the API key was refused" in bad.detail, bad


async def test_model_probe_names_an_unreachable_url(home: Path) -> None:
    url = dead_url("/v1")
    probe = await probe_model(config(home, llm=model(url)))
    assert probe.ok is False and f"cannot reach {url}" in probe.detail, probe


async def test_model_probe_on_an_unknown_provider(home: Path) -> None:
    # The configuration refuses it at load; a Config built in code can still carry it.
    cfg = config(home)
    cfg.llm = cfg.llm.model_copy(update={"provider": "nonsense", "model": "m"})
    probe = await probe_model(cfg)
    assert probe.ok is False and "unknown LLM provider 'nonsense'" in probe.detail, probe


async def test_model_probe_without_any_model_says_what_to_set(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("operator_use.providers.llm.detect.PROBE_TIMEOUT", 0.2)
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GROQ_API_KEY", "OPENROUTER_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("MISTRAL_API_KEY", "DEEPSEEK_API_KEY", "CEREBRAS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    probe = await probe_model(config(home, llm={"provider": "openai", "model": "m"}))
    assert probe.ok is False and "OPENAI_API_KEY is not set" in probe.detail, probe


# --- Telegram ---------------------------------------------------------------------------------------


def telegram(fake_url: str, token: str = TELEGRAM_TOKEN) -> dict[str, Any]:
    return {"telegram": {"enabled": True, "token": token, "base_url": fake_url}}


async def test_telegram_probe(home: Path) -> None:
    async with FakeTelegram() as fake:
        good = await probe_channel("telegram", config(home, channels=telegram(fake.base_url)))
        bad = await probe_channel("telegram", config(home, channels=telegram(fake.base_url, "42:not-the-token")))
    assert good == Probe(True, "telegram: the token belongs to @operator_test_bot (id 123456789)")
    assert bad.ok is False and "the token was refused" in bad.detail
    assert_no_secret(bad, "42:not-the-token")
    down = await probe_channel("telegram", config(home, channels=telegram(dead_url("/bot"))))
    assert down.ok is None and "telegram: cannot reach http://127.0.0.1:" in down.detail, down
    assert_no_secret(down, TELEGRAM_TOKEN)


# --- Discord ----------------------------------------------------------------------------------------


async def test_discord_probe(home: Path) -> None:
    def section(api: str, token: str) -> dict[str, Any]:
        return {"discord": {"enabled": True, "token": token, "api_base_url": api}}

    async with FakeDiscord(token="good-discord-token") as fake:
        good = await probe_channel("discord", config(home, channels=section(fake.api_base, "good-discord-token")))
        bad = await probe_channel("discord", config(home, channels=section(fake.api_base, "bad-discord-token")))
    assert good.ok is True and good.detail.startswith("discord: the token belongs to "), good
    assert bad.ok is False and "the token was refused" in bad.detail
    down = await probe_channel("discord", config(home, channels=section(dead_url("/api/v10"), "good-discord-token")))
    assert down.ok is None and "discord: cannot reach" in down.detail
    for probe in (good, bad, down):
        assert_no_secret(probe, "good-discord-token", "bad-discord-token")


# --- Slack ------------------------------------------------------------------------------------------


async def test_slack_probe_checks_the_bot_token_and_the_app_token(home: Path) -> None:
    def section(api: str, bot: str, app: str, mode: str = "socket") -> dict[str, Any]:
        return {"slack": {"enabled": True, "bot_token": bot, "app_token": app, "mode": mode, "api_base_url": api}}

    async with FakeSlackServer() as fake:
        bot, app = fake.bot_token, fake.app_token
        good = await probe_channel("slack", config(home, channels=section(fake.api_base_url, bot, app)))
        bad_bot = await probe_channel("slack", config(home, channels=section(fake.api_base_url, "xoxb-nope", app)))
        bad_app = await probe_channel("slack", config(home, channels=section(fake.api_base_url, bot, "xapp-nope")))
        calls = [c.method for c in fake.calls]
    assert good.ok is True and "socket mode allowed" in good.detail, good
    assert bad_bot.ok is False and "the bot token was refused (invalid_auth)" in bad_bot.detail
    assert bad_app.ok is False and "the app token was refused (invalid_auth)" in bad_app.detail
    assert calls.count("auth.test") == 3 and calls.count("apps.connections.open") == 2
    down = await probe_channel("slack", config(home, channels=section(dead_url("/api/"), bot, app)))
    assert down.ok is None and "slack: cannot reach" in down.detail
    for probe in (good, bad_bot, bad_app, down):
        assert_no_secret(probe, bot, app, "xoxb-nope", "xapp-nope")


# --- Twitch -----------------------------------------------------------------------------------------


async def test_twitch_probe_validates_the_user_token(home: Path) -> None:
    def section(id_url: str, token: str, **extra: Any) -> dict[str, Any]:
        return {"twitch": {"enabled": True, "client_id": CLIENT_ID, "access_token": token, "id_url": id_url, **extra}}

    fake = await FakeTwitchServer().start()
    try:
        token = fake.bot.token
        assert token is not None
        good = await probe_channel("twitch", config(home, channels=section(fake.id_url, token)))
        bad = await probe_channel("twitch", config(home, channels=section(fake.id_url, "expired-token")))
        other = await probe_channel("twitch", config(home, channels=section(fake.id_url, token, bot_id="1")))
    finally:
        await fake.stop()
    assert good == Probe(True, f"twitch: the token belongs to opbot (id {fake.bot.id})")
    assert bad.ok is False and "refused or has expired" in bad.detail
    assert other.ok is False and "not bot_id 1" in other.detail
    down = await probe_channel("twitch", config(home, channels=section(dead_url("/"), token)))
    assert down.ok is None and "twitch: cannot reach" in down.detail
    for probe in (good, bad, other, down):
        assert_no_secret(probe, token, "expired-token")


# --- MQTT -------------------------------------------------------------------------------------------


async def test_mqtt_probe_connects_to_the_broker(home: Path, tmp_path: Path) -> None:
    require_module("aiomqtt")
    passwd = require_binary("mosquitto_passwd")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    subprocess.run([passwd, "-b", "-c", str(workdir / "passwd"), "agent", "s3cret-pw"], check=True)
    broker = Mosquitto(workdir, anonymous=False, extra_conf=f"password_file {workdir / 'passwd'}\n")
    await broker.start()

    def section(port: int, password: str) -> dict[str, Any]:
        return {"mqtt": {"enabled": True, "port": port, "username": "agent", "password": password}}

    try:
        good = await probe_channel("mqtt", config(home, channels=section(broker.port, "s3cret-pw")))
        bad = await probe_channel("mqtt", config(home, channels=section(broker.port, "wr0ng-pw")))
    finally:
        await broker.stop()
    assert good == Probe(True, f"mqtt: connected to the broker at 127.0.0.1:{broker.port}")
    assert bad.ok is False and "refused the connection" in bad.detail, bad
    down = await probe_channel("mqtt", config(home, channels=section(free_port(), "s3cret-pw")))
    assert down.ok is None and "mqtt: cannot reach the broker at 127.0.0.1:" in down.detail, down
    for probe in (good, bad, down):
        assert_no_secret(probe, "s3cret-pw", "wr0ng-pw")


# --- the rest ---------------------------------------------------------------------------------------


async def test_local_channels_and_unknown_names(home: Path) -> None:
    cfg = config(home)
    assert (await probe_channel("web", cfg)).ok is True
    assert (await probe_channel("cli", cfg)).ok is True
    unknown = await probe_channel("carrier-pigeon", cfg)
    assert unknown.ok is False and "no channel named 'carrier-pigeon'" in unknown.detail
    missing = await probe_channel("telegram", cfg)
    assert missing.ok is False and "no token" in missing.detail


async def test_a_url_that_is_not_http_is_a_configuration_mistake_not_an_outage(home: Path) -> None:
    probe = await probe_channel("telegram", config(home, channels=telegram("ftp://files.example/bot")))
    assert probe.ok is False and "Telegram's API URL is not a valid http(s) URL: ftp://files.example" in probe.detail
    assert_no_secret(probe, TELEGRAM_TOKEN)
    discord = {"discord": {"enabled": True, "token": "t", "api_base_url": "http://"}}
    assert (await probe_channel("discord", config(home, channels=discord))).ok is False


# --- a server that accepts and never answers, and passwords in URLs ----------------------------------


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A loopback HTTP address that accepts connections and never says a word: the base URL."""
    done = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        done.set()
        server.close()
        await server.wait_closed()


async def test_model_probe_gives_up_on_a_silent_server_within_its_time(home: Path) -> None:
    """The whole probe (building the client included) has `seconds`: whether the time ran out while the
    server sat on the request or before, the user is told the limit, not left waiting a minute."""
    async with silent_server() as url:
        probe = await probe_model(config(home, llm=model(url)), seconds=0.5)
    assert probe.ok is False
    assert "within 0.5 seconds" in probe.detail, probe


async def test_probe_details_never_show_a_password_written_into_a_url(home: Path) -> None:
    url = dead_url("/v1").replace("http://", "http://admin:hunter2pass@")
    probe = await probe_model(config(home, llm=model(url)))
    assert probe.ok is False and "cannot reach http://***@127.0.0.1:" in probe.detail, probe
    assert_no_secret(probe, "hunter2pass", "admin:")
