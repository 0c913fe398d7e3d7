"""`operator-use onboard` as a user meets it: real processes against the fake OpenAI and Telegram servers, the
non-interactive flags and the questions in a real terminal (tmux), then `operator-use run` on what it wrote."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from operator_use.config import load_config

from .fakes.llm_server import FakeLLMServer, echo_responder
from .fakes.telegram_server import TOKEN, FakeTelegram
from .support.deps import require_binary, unavailable
from .support.tmux import Tmux

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-onboard-good-key"


def env(home: Path) -> dict[str, str]:
    # No API key or OPERATOR_* variable of the machine running the tests leaks in.
    return {"PATH": os.environ["PATH"], "HOME": str(home), "OPERATOR_HOME": str(home), "LANG": "C.UTF-8"}


async def operator_use(home: Path, *args: str) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop the fakes serve on; stdin is /dev/null, as in a script."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operator_use",
        *args,
        cwd=ROOT,
        env=env(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def model_flags(server: FakeLLMServer, key: str = KEY) -> list[str]:
    return ["--provider", "openai", "--model", "fake-model", "--api-key", key, "--base-url", server.openai_base_url]


def telegram_flags(fake: FakeTelegram, token: str = TOKEN, owner: str | None = "4242") -> list[str]:
    flags = ["--channel", "telegram", "--channel-token", token, "--channel-api-url", fake.base_url]
    return flags + (["--owner-id", owner] if owner else [])


async def test_non_interactive_onboard_writes_a_config_with_which_run_answers_on_telegram(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key=KEY) as server, FakeTelegram() as fake:
        code, out, err = await operator_use(
            home, "onboard", "--non-interactive", "--no-web", *model_flags(server), *telegram_flags(fake)
        )
        assert code == 0, out + err
        assert "Local web chat: off" in out
        assert "OK: openai/fake-model answers" in out
        assert "OK: telegram: the token belongs to @operator_test_bot" in out
        assert "Next: operator-use run" in out
        assert KEY not in out + err and TOKEN not in out + err

        path = home / "config.yaml"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]  # the atomic write left nothing behind
        config = load_config()
        assert config.llm.provider == "openai" and config.llm.model == "fake-model"
        assert config.llm.api_key is not None and config.llm.api_key.get_secret_value() == KEY
        telegram = config.channels.telegram
        assert telegram.enabled and telegram.allow_from == ["4242"] and telegram.admins == ["4242"]
        assert not config.channels.web.enabled
        assert (home / "workspace" / "SOUL.md").exists()

        # The agent starts on that file alone and answers the owner on Telegram.
        run = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "operator_use",
            "run",
            cwd=ROOT,
            env=env(home),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            owner = fake.user(4242, "owner", "Owner")
            fake.send_text(fake.private_chat(owner), owner, "hello from onboarding")
            await fake.wait_for(
                lambda: any(m.text == "You said: hello from onboarding" for m in fake.messages_in(4242)), 60
            )
        finally:
            run.send_signal(signal.SIGTERM)
            assert run.stderr is not None
            stderr = (await asyncio.wait_for(run.stderr.read(), 60)).decode()
            await asyncio.wait_for(run.wait(), 60)
        assert run.returncode == 0, stderr
        assert KEY not in stderr and TOKEN not in stderr


async def test_the_local_web_chat_stays_on_unless_no_web_is_given(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key=KEY) as server:
        code, out, err = await operator_use(home, "onboard", "--non-interactive", *model_flags(server))
        assert code == 0, out + err
        assert "Local web chat: on" in out
        assert load_config().channels.web.enabled
        code, out, err = await operator_use(
            home, "onboard", "--non-interactive", "--force", "--no-web", *model_flags(server)
        )
        assert code == 0, out + err
        assert "Local web chat: off" in out
        assert not load_config().channels.web.enabled


async def test_a_refused_key_exits_1_and_writes_nothing(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key=KEY) as server, FakeTelegram() as fake:
        code, out, err = await operator_use(
            home, "onboard", "--non-interactive", *model_flags(server, "sk-wrong-key"), *telegram_flags(fake)
        )
    assert code == 1, out + err
    assert "Error: the model check failed: openai/fake-model: the API key was refused" in err
    assert "Nothing was written." in err and "Traceback" not in err
    assert "sk-wrong-key" not in out + err
    assert not (home / "config.yaml").exists()
    assert fake.calls_to("getMe") == []  # it stopped at the first answer that did not work


async def test_an_invalid_telegram_token_exits_1_and_writes_nothing(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key=KEY) as server, FakeTelegram() as fake:
        code, out, err = await operator_use(
            home, "onboard", "--non-interactive", *model_flags(server), *telegram_flags(fake, "987:not-my-bot")
        )
        malformed = await operator_use(
            home, "onboard", "--non-interactive", *model_flags(server), *telegram_flags(fake, "not a token")
        )
    assert code == 1, out + err
    assert "Error: telegram: the token was refused (copy it again from @BotFather)" in err
    assert "987:not-my-bot" not in out + err and "Traceback" not in err
    assert malformed[0] == 1 and "does not look like a bot token from @BotFather" in malformed[2], malformed
    assert not (home / "config.yaml").exists()


async def test_non_interactive_needs_the_owner_and_never_replaces_a_config_without_force(home: Path) -> None:
    (home / "config.yaml").write_text("log_level: DEBUG\n")
    async with FakeLLMServer(responder=echo_responder(), api_key=KEY) as server, FakeTelegram() as fake:
        kept = await operator_use(home, "onboard", "--non-interactive", *model_flags(server))
        assert kept[0] == 1 and "config.yaml exists; --force replaces it" in kept[2], kept
        assert (home / "config.yaml").read_text() == "log_level: DEBUG\n"
        no_owner = await operator_use(
            home, "onboard", "--non-interactive", "--force", *model_flags(server), *telegram_flags(fake, owner=None)
        )
        assert no_owner[0] == 1 and "give --owner-id: your Telegram user id" in no_owner[2], no_owner
        assert (home / "config.yaml").read_text() == "log_level: DEBUG\n"
        replaced = await operator_use(home, "onboard", "--non-interactive", "--force", *model_flags(server))
    assert replaced[0] == 0, replaced
    assert "Next: operator-use chat" in replaced[1]
    assert yaml.safe_load((home / "config.yaml").read_text())["llm"]["model"] == "fake-model"


async def test_without_a_terminal_the_questions_are_not_asked(home: Path) -> None:
    code, _, err = await operator_use(home, "onboard")
    assert code == 1 and "give the answers as flags with --non-interactive" in err
    assert not (home / "config.yaml").exists()


# --- the questions, in a real terminal --------------------------------------------------------------


@pytest.mark.usefixtures("no_local_model_servers")
async def test_interactive_onboard_in_a_real_terminal(home: Path) -> None:
    """Every question answered as a user would: a wrong key first (hidden, refused, asked again), the
    Telegram token (hidden), and the owner found from the one-time code they send the bot (a stranger's
    earlier message, and the code sent in a group, passed over)."""
    require_binary("tmux")
    tmux = Tmux(f"onboard-{uuid.uuid4().hex[:8]}")

    async def shows(pattern: str, times: int = 1) -> str:
        # Polled in a thread, so the fakes on this loop keep answering meanwhile.
        return await asyncio.to_thread(tmux.wait_for, pattern, 60, times=times)

    async def answer(pattern: str, text: str, times: int = 1) -> None:
        await shows(pattern + r"\s*$", times)
        await asyncio.to_thread(tmux.type, text)

    async with FakeLLMServer(responder=echo_responder(), api_key=KEY) as server, FakeTelegram() as fake:
        variables = " ".join(f"{k}={v}" for k, v in {**env(home), "TERM": "xterm"}.items())
        command = (
            f"cd {ROOT} && env -i {variables} {sys.executable} -m operator_use onboard "
            f"--channel-api-url {fake.base_url}; echo EXIT=$?; sleep 60"
        )
        tmux.run("new-session", "-d", "-s", tmux.session, "-x", "150", "-y", "50", command)
        try:
            await answer(r"Provider \[anthropic\]:", "openai-compatible")
            await answer(r"Server URL \(with its /v1\):", server.openai_base_url)
            await answer(r"API key, if the server wants one \(hidden; Enter for none\):", "sk-wrong-key")
            await answer(r"Model:", "fake-model")
            await shows(r"Problem: the model check failed: openai-compatible/fake-model: the API key was refused")
            await answer(r"Try again\? \[Y/n\]:", "")
            await answer(r"Provider \[openai-compatible\]:", "")
            await answer(rf"Server URL \(with its /v1\) \[{server.openai_base_url}\]:", "")
            await answer(r"API key, if the server wants one \(hidden; Enter for none\):", KEY, times=2)
            await answer(r"Model \[fake-model\]:", "")
            await shows(r"OK: openai-compatible/fake-model answers")
            await answer(r"Channel \[none\]:", "telegram")
            await answer(r"Bot token from @BotFather \(hidden\):", TOKEN)
            await shows(r"OK: telegram: the token belongs to @operator_test_bot")
            await answer(r"Find your Telegram user id now\? .*\[Y/n\]:", "")
            screen = await shows(r"Send the code \d{6} to your bot now")
            code = re.findall(r"Send the code (\d{6}) to your bot now", screen)[0]
            # Anyone may write to the bot first: only the sender of the code shown on this screen is the owner.
            mallory = fake.user(666, "mallory", "Ada")
            fake.send_text(fake.private_chat(mallory), mallory, "hi, it's me")
            fake.send_text(fake.group(-100), mallory, code)
            ada = fake.user(777, "ada", "Ada")
            fake.send_text(fake.private_chat(ada), ada, f" {code} ")
            await answer(r"The code came from Ada @ada \(id 777\)\. Is that you\? \[Y/n\]:", "")
            await answer(r"Keep the local web chat on too\? \[Y/n\]:", "")
            screen = await shows(r"EXIT=\d+")
        finally:
            tmux.run("kill-session", "-t", tmux.session)
        assert "EXIT=0" in screen, screen
        assert "Next: operator-use run" in screen
        for secret in (KEY, "sk-wrong-key", TOKEN):
            assert secret not in screen  # hidden prompts echo nothing
        assert fake.pending_updates == 0  # the messages read were confirmed: the agent will not answer them
    config = load_config()
    assert config.llm.api_key is not None and config.llm.api_key.get_secret_value() == KEY
    assert config.llm.base_url == server.openai_base_url and config.llm.provider is None
    assert config.channels.telegram.allow_from == ["777"] and config.channels.telegram.admins == ["777"]
    assert config.channels.web.enabled
    assert stat.S_IMODE((home / "config.yaml").stat().st_mode) == 0o600


@pytest.fixture
def no_local_model_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interactive test expects detection to find nothing; a model server on this machine's usual
    ports would be offered first."""
    import socket

    for port in (11434, 1234, 8080, 8000):
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                unavailable(f"a server listens on 127.0.0.1:{port}, where detection looks for a local model")


async def test_a_local_server_gives_its_first_model_and_an_unreachable_platform_keeps_the_token(home: Path) -> None:
    """`--provider lmstudio` with the server's URL and no model: the first model it lists. A platform that
    cannot be reached says nothing about the token: it is kept as given (doctor checks it later)."""
    async with FakeLLMServer(responder=echo_responder(), models=["qwen-local", "other"]) as server:
        dead = await FakeTelegram().start()
        unreachable = dead.base_url
        await dead.stop()
        code, out, err = await operator_use(
            home,
            "onboard",
            "--non-interactive",
            "--provider",
            "lmstudio",
            "--base-url",
            server.openai_base_url,
            "--channel",
            "telegram",
            "--channel-token",
            TOKEN,
            "--channel-api-url",
            unreachable,
            "--owner-id",
            "4242",
        )
    assert code == 0, out + err
    assert "OK: lmstudio/qwen-local answers" in out
    assert "Could not check it now (telegram: cannot reach http://127.0.0.1:" in out and TOKEN not in out + err
    config = load_config()
    assert (config.llm.provider, config.llm.model, config.llm.base_url) == (
        "lmstudio",
        "qwen-local",
        server.openai_base_url,
    )
    assert config.llm.api_key is None
    assert config.channels.telegram.token is not None and config.channels.telegram.token.get_secret_value() == TOKEN


@pytest.mark.parametrize(
    ("channel", "flags"),
    [
        ("discord", {"channel_token": "discord-bot-token", "channel_api_url": "http://127.0.0.1:9/api/v10"}),
        ("slack", {"channel_token": "xoxb-bot", "slack_app_token": "xapp-app"}),
        ("twitch", {"channel_token": "user-token", "twitch_client_id": "client", "twitch_channel": "streamer"}),
        ("mqtt", {"mqtt_host": "broker.lan", "mqtt_port": 8883, "mqtt_username": "agent", "mqtt_password": "pw"}),
    ],
)
def test_each_channels_answers_make_a_config_that_loads(home: Path, channel: str, flags: dict[str, object]) -> None:
    """The section each channel's answers become is a valid configuration (the end-to-end run above is
    Telegram's; these platforms' token checks are in test_probes.py)."""
    from operator_use.cli.onboard import Asker, Flags, Plan, _channel_answers, write_private

    section = _channel_answers(channel, Flags(non_interactive=True, **flags), Asker(False))  # type: ignore[arg-type]
    section.update(allow_from=["1234"], admins=["1234"])
    data = Plan(llm={"provider": "ollama", "model": "llama3.2"}, channel=channel, section=section).data()
    write_private(home / "config.yaml", yaml.safe_dump(data))
    config = load_config()
    loaded = getattr(config.channels, channel)
    assert loaded.enabled and loaded.allow_from == ["1234"] and loaded.admins == ["1234"]
    assert config.channels.web.enabled  # the local web chat stays on beside the platform
    assert stat.S_IMODE((home / "config.yaml").stat().st_mode) == 0o600


# --- the owner's one-time code, names from strangers, messages -----------------------------------------


async def test_the_owner_is_the_sender_of_the_code_and_no_one_else() -> None:
    """Anyone can write to a bot: a stranger's private message, the code in a group or sent by another bot,
    are all passed over; the first private message whose text is the code gives the owner."""
    from operator_use.cli.onboard import find_telegram_owner

    async with FakeTelegram() as fake:
        stranger = fake.user(666, "mallory", "Mallory")
        fake.send_text(fake.private_chat(stranger), stranger, "hello bot")
        fake.send_text(fake.private_chat(stranger), stranger, "123456")  # a guess
        fake.send_text(fake.group(-1001), stranger, "482193")
        bot = {**fake.user(999, "other_bot", "Bot"), "is_bot": True}
        fake.send_text(fake.private_chat(bot), bot, "482193")
        owner = fake.user(777, "ada", "Ada")
        fake.send_text(fake.private_chat(owner), owner, "482193\n")
        found = await find_telegram_owner(fake.base_url, TOKEN, 30, "482193")
        assert found is not None and found["id"] == 777
        assert fake.pending_updates == 0  # all read and confirmed: the agent will not answer them later

        fake.send_text(fake.private_chat(stranger), stranger, "not the code")
        assert await find_telegram_owner(fake.base_url, TOKEN, 1, "482193") is None


def test_a_senders_name_is_shown_escaped() -> None:
    from operator_use.cli.onboard import sender_name

    user = {
        "id": 777,
        "first_name": "\x1b]8;;https://evil.example/\x07Ada\x1b]8;;\x07\x1b[2J",
        "last_name": "\u202eecalevol\rX\nY\u200b",
        "username": "ada\x9b",
    }
    name = sender_name(user)
    for raw in ("\x1b", "\x07", "\r", "\n", "\u202e", "\u200b", "\x9b"):
        assert raw not in name, name
    assert name == (
        "\\x1b]8;;https://evil.example/\\x07Ada\\x1b]8;;\\x07\\x1b[2J \\u202eecalevol\\x0dX\\x0aY\\u200b "
        "@ada\\x9b (id 777)"
    )
    assert sender_name({"id": 1, "first_name": "A" * 500}) == "A" * 64 + "… (id 1)"


async def test_a_port_out_of_range_is_named_in_the_settings_words(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), api_key=KEY) as server:
        code, out, err = await operator_use(
            home, "onboard", "--non-interactive", *model_flags(server),
            "--channel", "mqtt", "--mqtt-port", "99999", "--owner-id", "me",
        )  # fmt: skip
    assert code == 1, out + err
    assert "channels.mqtt.port: must be at most 65535 (got 99999)" in err
    for jargon in ("Input should be", "less than or equal", "Value error"):
        assert jargon not in out + err
    assert not (home / "config.yaml").exists()


async def test_the_server_url_is_shown_without_its_user_and_password(home: Path) -> None:
    import socket

    with socket.socket() as held:  # bound, not listening: the connection is refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        code, out, err = await operator_use(
            home, "onboard", "--non-interactive", "--base-url", f"http://bob:hunter2@127.0.0.1:{port}/v1"
        )
    assert code == 1, out + err
    assert f"Could not list the server's models: http://***@127.0.0.1:{port}/v1/models: cannot connect" in out
    assert "hunter2" not in out + err and "bob" not in out + err
