"""The `operator-use` command line. Heavy modules are imported inside the commands so --help is fast."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

# Light: the stores load inside the commands.
from .access import pairing_app, user_app
from .loading import load_or_exit

if TYPE_CHECKING:
    from ..app import App
    from ..config import Config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="operator-use: a self-hosted personal AI agent for chat apps and the terminal.",
)
sessions_app = typer.Typer(no_args_is_help=True, help="Inspect stored conversations.")
app.add_typer(sessions_app, name="sessions")
app.add_typer(pairing_app, name="pairing")
app.add_typer(user_app, name="user")


def _setup_logging(config: Config, *, quiet_console: bool) -> Path:
    log_dir = config.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "operator-use.log"
    root = logging.getLogger()
    root.setLevel(config.log_level.upper())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.WARNING if quiet_console else config.log_level.upper())
    root.addHandler(console)
    # Request lines carry URLs (Telegram's include the bot token): kept out of the logs by default.
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "anthropic", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file


async def _serve(application: App) -> None:
    from ..app import NoLLMConfigured
    from ..homelock import HomeInUse

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, application.request_stop)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        llm = await application.prepare()
    except (NoLLMConfigured, HomeInUse) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Model: {llm.label} ({application.llm_reason})", err=True)
    try:
        await application.start()
        await application.wait_closed()
    finally:
        await application.stop()


def _run(only: list[str] | None) -> None:
    from ..app import App
    from ..channels.cli import NO_TERMINAL, stdin_is_terminal
    from ..channels.registry import build_channels

    config = load_or_exit()
    # With the terminal chat on this console, log lines would interleave with the conversation:
    # only problems show there, everything goes to the log file.
    wanted = "cli" in only if only is not None else config.channels.cli.enabled
    terminal = wanted and stdin_is_terminal()
    log_file = _setup_logging(config, quiet_console=terminal)
    if wanted and not terminal:
        # Under systemd, nohup or `docker run` without -t: no terminal chat (the channel would turn itself
        # off; not building it keeps /status and the log clear), the other channels go on.
        config.channels.cli.enabled = False
        logging.getLogger("operator_use.channels.cli").info(NO_TERMINAL)
    if terminal:
        typer.echo(f"Logs: {log_file}", err=True)
    application = App(config)
    if only is not None:
        application._given_channels = build_channels(config, on_eof=application.request_stop, only=only)
    asyncio.run(_serve(application))
    if application.restart_requested:
        typer.echo("Restarting operator-use...", err=True)
        os.execv(sys.executable, [sys.executable, "-m", "operator_use", *sys.argv[1:]])


@app.command()
def init() -> None:
    """Create the data directory, a starter config.yaml and the workspace (safe to run again)."""
    from ..config import CONFIG_FILE, ConfigError, data_home, default_config_yaml
    from ..workspace import TemplateMissing, ensure_workspace

    try:
        home = data_home()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / CONFIG_FILE
    if config_path.exists():
        typer.echo(f"Kept existing {config_path}")
    else:
        config_path.write_text(default_config_yaml(), encoding="utf-8")
        typer.echo(f"Wrote {config_path}")
    config = load_or_exit()
    try:
        created = ensure_workspace(config.workspace)
    except TemplateMissing as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"Workspace {config.workspace}: {len(created)} file(s) added"
        if created
        else f"Workspace {config.workspace} is complete"
    )


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
    """Print the resolved configuration, secrets masked."""
    import yaml

    config = load_or_exit()
    typer.echo(yaml.safe_dump(config.masked(), sort_keys=False).rstrip())


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
