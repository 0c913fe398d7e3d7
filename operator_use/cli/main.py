"""The `operator-use` command line. Heavy modules are imported inside the commands so --help is fast."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import typer

# Light: the stores load inside the commands.
from .access import pairing_app, user_app
from .doctor import doctor
from .loading import ensure_workspace_or_exit, load_or_exit
from .onboard import onboard
from .status import status

if TYPE_CHECKING:
    from ..app import App
    from ..config import Config
    from ..logs import LogSetup

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="operator-use: a self-hosted personal AI agent for chat apps and the terminal.",
)
sessions_app = typer.Typer(no_args_is_help=True, help="Inspect stored conversations.")
app.add_typer(sessions_app, name="sessions")
app.add_typer(pairing_app, name="pairing")
app.add_typer(user_app, name="user")
app.command()(doctor)
app.command()(status)
app.command()(onboard)


def _version(value: bool) -> None:
    if value:
        from ..control.status import package_version

        typer.echo(f"operator-use {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """operator-use: a self-hosted personal AI agent for chat apps and the terminal."""


def _setup_logging(config: Config, *, quiet_console: bool) -> LogSetup:
    from ..logs import setup

    # A rotating file, written with the console by a thread fed through a queue (logs.py).
    logs = setup(config.home, config.log_level, config.logging, quiet_console=quiet_console)
    # Request lines carry URLs (Telegram's include the bot token): kept out of the logs by default.
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "anthropic", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logs


def _on_sigint(application: App) -> None:
    """Ctrl-C stops the agent, except while the terminal chat is open: there it is the chat's (clear the
    line, /stop the reply), also when it arrives as a signal because prompt_toolkit left raw mode to print
    above the prompt. Ctrl-D or SIGTERM stop the agent then."""
    from ..channels.cli import TerminalChannel

    if any(isinstance(c, TerminalChannel) and c.interrupt() for c in application.channels):
        return
    application.request_stop()


async def _serve(application: App) -> None:
    from ..app import NoLLMConfigured
    from ..channels.registry import MissingExtras
    from ..homelock import HomeLockError

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if sig == signal.SIGINT:
                loop.add_signal_handler(sig, _on_sigint, application)
            else:
                loop.add_signal_handler(sig, application.request_stop)
        except (NotImplementedError, RuntimeError):
            pass
    # Ctrl-C or SIGTERM while the model is being chosen (a slow or silent server) ends the start there.
    preparing = asyncio.create_task(application.prepare())
    stopping = asyncio.create_task(application.wait_closed())
    try:
        await asyncio.wait({preparing, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not preparing.done():
            preparing.cancel()
        await asyncio.gather(preparing, stopping, return_exceptions=True)
    if preparing.cancelled():
        typer.echo("Stopped before the agent started.", err=True)
        return
    try:
        llm = preparing.result()
    except (NoLLMConfigured, HomeLockError, MissingExtras) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Model: {llm.label} ({application.llm_reason})", err=True)
    try:
        await application.start()
        failures = application.gateway.failures if application.gateway else {}
        if failures:
            # A channel that can never start as configured (its port in use...) ends the start, as a missing
            # extra does: the user fixes the setting rather than finding out later that a chat is missing.
            for name, why in failures.items():
                typer.echo(f"Error: channel {name} cannot start: {why}", err=True)
            raise typer.Exit(1)
        await application.wait_closed()
    finally:
        await application.stop()


def _run(only: list[str] | None) -> None:
    from ..app import App
    from ..channels.cli import NO_TERMINAL, stdin_is_terminal
    from ..channels.registry import MissingExtras, build_channels
    from ..homelock import HomeLock, HomeLockError

    config = load_or_exit()
    # The data home first: a second agent refused here has not opened (nor rotated) the running one's log
    # file, and says why on stderr only. App.prepare() finds the lock already held.
    lock = HomeLock(config.home)
    try:
        lock.acquire()
    except HomeLockError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    # With the terminal chat on this console, log lines would interleave with the conversation:
    # only problems show there, everything goes to the log file.
    wanted = "cli" in only if only is not None else config.channels.cli.enabled
    terminal = wanted and stdin_is_terminal()
    logs = _setup_logging(config, quiet_console=terminal)
    if wanted and not terminal:
        # Under systemd, nohup or `docker run` without -t: no terminal chat (the channel would turn itself
        # off; not building it keeps /status and the log clear), the other channels go on.
        config.channels.cli.enabled = False
        logging.getLogger("operator_use.channels.cli").info(NO_TERMINAL)
    if terminal:
        typer.echo(f"Logs: {logs.path}", err=True)
    application = App(config, home_lock=lock)
    try:
        if only is not None:
            try:
                application._given_channels = build_channels(config, on_eof=application.request_stop, only=only)
            except MissingExtras as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(1) from None
        asyncio.run(_serve(application))
    finally:
        logs.close()
        lock.release()
    if application.restart_requested:
        typer.echo("Restarting operator-use...", err=True)
        os.execv(sys.executable, [sys.executable, "-m", "operator_use", *sys.argv[1:]])


@app.command()
def init() -> None:
    """Create the data directory, a starter config.yaml and the workspace (safe to run again)."""
    from ..config import CONFIG_FILE, ConfigError, data_home, default_config_yaml

    try:
        home = data_home()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / CONFIG_FILE
    # Created 0600 in one step (never a moment readable by others): the starter invites an api_key.
    try:
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        typer.echo(f"Kept existing {config_path}")
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(default_config_yaml())
        typer.echo(f"Wrote {config_path} (readable by you only: it may hold an API key)")
    config = load_or_exit()
    ensure_workspace_or_exit(config)


@app.command()
def run() -> None:
    """Start the agent on every enabled channel."""
    _run(None)


@app.command()
def chat() -> None:
    """Talk to the agent in this terminal."""
    from ..channels.cli import stdin_is_terminal

    if not stdin_is_terminal():
        typer.echo(
            "operator-use chat needs a terminal, and stdin is not one. Without a terminal, "
            "`operator-use run` serves the other channels (the web chat, MQTT...).",
            err=True,
        )
        raise typer.Exit(1)
    _run(["cli"])


@app.command("config")
def show_config() -> None:
    """Print the resolved configuration, secrets masked (and the user:password@ of URLs)."""
    import yaml

    from ..security.redact import strip_url_credentials_in

    config = load_or_exit()
    typer.echo(yaml.safe_dump(strip_url_credentials_in(config.masked()), sort_keys=False).rstrip())


@sessions_app.command("list")
def sessions_list() -> None:
    """List conversations, most recent first."""
    import datetime as dt

    from ..session.store import SessionStore

    config = load_or_exit()
    infos = SessionStore(config.home).list_sessions()
    if not infos:
        typer.echo("No conversations yet.")
    for info in infos:
        when = dt.datetime.fromtimestamp(info.updated_at).strftime("%Y-%m-%d %H:%M")
        typer.echo(f"{info.key}\t{info.messages} messages\t{when}")


@sessions_app.command("show")
def sessions_show(key: str, last: int | None = typer.Option(None, help="Only the last N messages.")) -> None:
    """Print one conversation's history."""
    from ..session.store import SessionStore, history_to_text

    config = load_or_exit()
    messages = SessionStore(config.home).read_sync(key)
    if not messages:
        typer.echo(f"No conversation {key!r}.", err=True)
        raise typer.Exit(1)
    typer.echo(history_to_text(messages[-last:] if last else messages))


def main() -> None:
    app()
