"""Operating the agent: --version, a channel without its extra, one agent per data home, log rotation."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import pytest

from operator_use.bus.memory import MemoryBus
from operator_use.channels.base import Channel
from operator_use.gateway.gateway import Gateway
from operator_use.homelock import HomeLock, UnsafeLockFile

from .fakes.llm_server import FakeLLMServer, echo_responder
from .support.agent_process import ROOT, agent_env, fake_model, run_cli, run_cli_now, running_agent, web_chat
from .support.blocked import blocked_env
from .support.mqtt import free_port


async def test_version_prints_the_installed_package_version(home: Path) -> None:
    result = await run_cli("--version", env=agent_env(home))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"operator-use {version('operator-use')}"


# --- a channel enabled without its optional extra -------------------------------------------------


class Stub(Channel):
    """A channel that only connects (each test says how)."""

    name = "telegram"

    async def disconnect(self) -> None:
        pass

    async def send(self, address, text, *, reply_to=None, plain=False):  # type: ignore[no-untyped-def]
        return "1"


@contextlib.asynccontextmanager
async def started_gateway(channel: Channel) -> AsyncIterator[tuple[Gateway, list[logging.LogRecord]]]:
    """A gateway with `channel` alone, retrying at once, started; and what it logged (kept after it stopped)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logger = logging.getLogger("operator_use.gateway.gateway")
    logger.addHandler(keep)
    gateway = Gateway(MemoryBus(), [channel], start_retry_base=0.001, start_retry_max=0.001)
    try:
        await gateway.start()
        yield gateway, records
    finally:
        await gateway.stop()
        logger.removeHandler(keep)


async def test_a_channel_without_its_extra_fails_at_once_with_the_install_command(home: Path, tmp_path: Path) -> None:
    env = {
        **agent_env(home),
        **blocked_env(tmp_path / "no-telegram", "telegram"),
        "OPERATOR_CHANNELS__TELEGRAM__ENABLED": "true",
        "OPERATOR_CHANNELS__TELEGRAM__TOKEN": "123:abc",
        # A model that would answer: the failure must be the missing package, and come before anything else.
        **fake_model(f"http://127.0.0.1:{free_port()}/v1"),
    }
    # The blocker is real: this Python cannot import the SDK.
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import telegram", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, err = await probe.communicate()
    assert probe.returncode == 1 and b"No module named 'telegram'" in err

    result = await run_cli("run", env=env)
    assert result.returncode == 1, result.stderr
    assert "telegram needs python-telegram-bot (module telegram)" in result.stderr
    assert "pip install 'operator-use[telegram]'" in result.stderr
    assert "make run EXTRAS=web,telegram" in result.stderr
    assert "Traceback" not in result.stderr and "retrying" not in result.stderr


async def test_the_gateway_does_not_retry_a_channel_whose_sdk_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An embedding program hands over a channel whose SDK import fails in connect(): one clear error, no retry."""
    monkeypatch.setitem(sys.modules, "telegram", None)  # this Python cannot import it (find_spec agrees)

    class NeedsTelegram(Stub):
        attempts = 0

        async def connect(self) -> None:
            type(self).attempts += 1
            import telegram  # noqa: F401

    async with started_gateway(NeedsTelegram()) as (gateway, records):
        assert gateway.status() == {"telegram": "failed"}
        assert NeedsTelegram.attempts == 1
    assert any(
        "module telegram is not installed; install it: pip install 'operator-use[telegram]'" in r.getMessage()
        for r in records
    ), [r.getMessage() for r in records]


@pytest.mark.parametrize(
    "importing",
    [
        "telegram.no_such_submodule",  # a submodule missing inside an installed SDK
        "operator_use.channels.telegram.helpers_renamed",  # our own code importing what is not there
    ],
)
async def test_other_missing_modules_are_bugs_retried_with_their_traceback(importing: str) -> None:
    """Not an extra to install: the normal path, logged with the traceback and retried."""
    retried = asyncio.Event()

    class Broken(Stub):
        attempts = 0

        async def connect(self) -> None:
            type(self).attempts += 1
            if type(self).attempts >= 2:
                retried.set()
            importlib.import_module(importing)

    async with started_gateway(Broken()) as (gateway, records):
        await asyncio.wait_for(retried.wait(), 30)  # a bound against hangs only
        assert gateway.status()["telegram"] != "failed"
    logged = [r.exc_info[1] for r in records if r.exc_info and isinstance(r.exc_info[1], ModuleNotFoundError)]
    assert logged and logged[0].name == importing, [r.getMessage() for r in records]
    assert not any("install it" in r.getMessage() for r in records)


# --- one agent per data home ----------------------------------------------------------------------


async def test_a_second_run_on_the_same_home_is_refused_before_it_binds_any_port(home: Path) -> None:
    port = free_port()
    async with FakeLLMServer(responder=echo_responder()) as server:
        env = agent_env(home, **fake_model(server.openai_base_url), **web_chat(port))
        async with running_agent(env) as first:
            second = await run_cli("run", env=env)
            assert second.returncode == 1, second.stderr
            assert (
                f"Another operator-use (pid {first.proc.pid}) is already running on {home}; stop it or set "
                "OPERATOR_HOME to another directory."
            ) in second.stderr
            assert "in use" not in second.stderr.lower() and "Errno" not in second.stderr
            assert "Traceback" not in second.stderr
            assert second.stderr.strip().splitlines() == [
                f"Another operator-use (pid {first.proc.pid}) is already running on {home}; stop it or set "
                "OPERATOR_HOME to another directory."
            ]
            # The first one is untouched: it still answers.
            status = await run_cli("status", "--json", env=env)
            assert status.returncode == 0 and f'"pid": {first.proc.pid}' in status.stdout


async def test_a_refused_second_run_never_touches_the_running_agents_log(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder()) as server:
        env = agent_env(home, **fake_model(server.openai_base_url))
        async with running_agent(env):
            # The first agent keeps writing its open (now unlinked) file; whoever opens the log by name
            # recreates the directory.
            shutil.rmtree(home / "logs")
            second = await run_cli("run", env=env)
            assert second.returncode == 1 and "is already running" in second.stderr, second.stderr
            assert not (home / "logs").exists(), "the refused run opened the log file"


def test_a_symlink_at_the_lock_is_refused_and_its_target_left_alone(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("do not truncate me\n")
    (home / ".lock").symlink_to(target)
    with pytest.raises(UnsafeLockFile, match=r"\.lock is a symbolic link; remove it"):
        HomeLock(home).acquire()
    assert target.read_text() == "do not truncate me\n"
    result = run_cli_now("run", env=agent_env(home))
    assert result.returncode == 1 and "is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert target.read_text() == "do not truncate me\n"


def test_a_lock_that_is_not_a_regular_file_of_ours_is_refused(home: Path) -> None:
    (home / ".lock").mkdir()
    with pytest.raises(Exception, match=r"\.lock"):  # a directory cannot even be opened for writing
        HomeLock(home).acquire()
    (home / ".lock").rmdir()
    os.mkfifo(home / ".lock")
    with pytest.raises(UnsafeLockFile, match="is not a regular file"):
        HomeLock(home).acquire()
    (home / ".lock").unlink()
    if os.getuid() == 0:  # only root can give a file away: someone else's lock file is not ours to write
        (home / ".lock").write_text("")
        os.chown(home / ".lock", 65534, 65534)
        with pytest.raises(UnsafeLockFile, match="belongs to uid 65534"):
            HomeLock(home).acquire()


# --- the log file rotates -------------------------------------------------------------------------

LOG_A_LOT = """
import logging
from operator_use.cli.main import _setup_logging
from operator_use.config import load_config

logs = _setup_logging(load_config(), quiet_console=True)
for i in range(400):
    logging.getLogger("operator_use.test").info("line %04d %s", i, "x" * 60)
logs.close()
"""


def log_a_lot(home: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOG_A_LOT], cwd=ROOT, env=agent_env(home), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


def test_the_log_rotates_at_max_bytes_keeping_the_configured_backups(home: Path) -> None:
    (home / "config.yaml").write_text("logging:\n  max_bytes: 4000\n  backups: 3\n")
    result = log_a_lot(home)
    logs = home / "logs"
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["operator-use.log", "operator-use.log.1", "operator-use.log.2", "operator-use.log.3"]
    for path in logs.iterdir():
        assert 0 < path.stat().st_size <= 4000, (path, path.stat().st_size)
    # The newest lines are in the current file, the ones just before in .1: nothing lost in between.
    current = (logs / "operator-use.log").read_text().splitlines()
    previous = (logs / "operator-use.log.1").read_text().splitlines()
    assert "line 0399" in current[-1]
    last_before = int(previous[-1].split("line ")[1][:4])
    first_now = int(current[0].split("line ")[1][:4])
    assert first_now == last_before + 1
    assert result.stderr == ""  # INFO lines go to the file only when the console is quiet


def test_logging_settings_are_checked(home: Path) -> None:
    (home / "config.yaml").write_text("logging:\n  max_bytes: -1\n  backup: 3\n")
    result = run_cli_now("config", env=agent_env(home))
    assert result.returncode == 2
    assert "logging.max_bytes" in result.stderr and "logging.backup" in result.stderr


def test_the_control_socket_can_be_turned_off(home: Path) -> None:
    result = run_cli_now("config", env={**agent_env(home), "OPERATOR_CONTROL__ENABLED": "false"})
    assert result.returncode == 0, result.stderr
    assert "control:\n  enabled: false" in result.stdout


def test_no_backups_still_caps_the_log_file(home: Path) -> None:
    (home / "config.yaml").write_text("logging:\n  max_bytes: 4000\n  backups: 0\n")
    log_a_lot(home)
    logs = home / "logs"
    assert [p.name for p in logs.iterdir()] == ["operator-use.log"]
    path = logs / "operator-use.log"
    assert 0 < path.stat().st_size <= 4000, path.stat().st_size
    assert "line 0399" in path.read_text().splitlines()[-1]


def test_log_files_are_private(home: Path) -> None:
    (home / "config.yaml").write_text("logging:\n  max_bytes: 4000\n  backups: 2\n")
    log_a_lot(home)
    logs = home / "logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    for path in logs.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # What an older version left readable by others is made private on the next start.
    logs.chmod(0o755)
    (logs / "operator-use.log").chmod(0o644)
    log_a_lot(home)
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE((logs / "operator-use.log").stat().st_mode) == 0o600


LOG_AN_ESCAPE = """
import logging
from operator_use.cli.main import _setup_logging
from operator_use.config import load_config

logs = _setup_logging(load_config(), quiet_console=True)
logging.getLogger("operator_use.test").warning("LLM said: %s", "\\x1b]2;PWNED\\x07 \\x1b[2J \\x9b31m\\r")
logs.close()
"""


def test_control_characters_in_a_record_are_shown_on_the_console_and_escaped_in_the_file(home: Path) -> None:
    # Without the terminal chat: stderr is whatever the agent was given (here a pipe; often a terminal).
    result = subprocess.run(
        [sys.executable, "-c", LOG_AN_ESCAPE], cwd=ROOT, env=agent_env(home), capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert b"LLM said: ^[]2;PWNED^G ^[[2J \xef\xbf\xbd31m^M\n" in result.stderr
    assert not any(byte < 0x20 and byte not in b"\n\t" for byte in result.stderr), result.stderr
    logged = (home / "logs" / "operator-use.log").read_bytes()
    assert logged.endswith(b"LLM said: \\x1b]2;PWNED\\x07 \\x1b[2J \\x9b31m\\x0d\n"), logged
