"""`operator-use status`: ask the agent running on this data home what it is doing (control socket)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import NoReturn

import typer


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{s}s")
    return " ".join(parts)


def _lock_holder(home: Path) -> int | None:
    """The pid in the home lock while an agent really holds it (a running agent that does not answer).

    The pid written in the file proves nothing: the agent that wrote it may be dead and its pid reused.
    The lock does: if a non-blocking flock succeeds, nobody holds it (let go at once)."""
    from ..homelock import LOCK_FILE

    try:
        fd = os.open(home / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _fail(as_json: bool, code: int, message: str, **document: object) -> NoReturn:
    """Say what went wrong: on stderr, or (--json) as one JSON document on stdout; exit with `code`."""
    if as_json:
        typer.echo(json.dumps({**document, "error": message}))
    else:
        typer.echo(message, err=True)
    raise typer.Exit(code)


def status(
    as_json: bool = typer.Option(False, "--json", help="Print the running agent's status as JSON."),
) -> None:
    """Show the running agent's channels, turns in flight, queues, model and uptime."""
    from pydantic import ValidationError

    from ..config import ConfigError, load_config
    from ..control.client import NotRunning, ask
    from ..control.status import Status, package_version

    try:
        config = load_config()
    except ConfigError as exc:
        _fail(as_json, 2, str(exc), running=False, home=None)
    home = config.home
    try:
        answer = ask(home)
    except NotRunning:
        pid = _lock_holder(home)
        if pid is not None:
            who = f"operator-use (pid {pid})" if pid else "operator-use"
            message = (
                f"{who} holds data home {home} but does not answer on its control socket "
                "(still starting, or control.enabled is false)"
            )
        else:
            message = f"operator-use is not running (data home {home})"
        if as_json:
            typer.echo(json.dumps({"running": False, "home": str(home), "pid": pid or None, "message": message}))
        else:
            typer.echo(message, err=True)
        raise typer.Exit(1) from None
    except (OSError, ValueError) as exc:
        # Something listens on the socket (it accepted), but what it said is not a status.
        _fail(as_json, 1, f"operator-use on {home} did not answer properly: {exc}", running=True, home=str(home))
    try:
        info = Status.model_validate(answer)
    except ValidationError:
        # Another version of operator-use (older or newer) running on this home, or an error document.
        version = answer.get("version") if isinstance(answer.get("version"), str) else "unknown"
        said = f": {str(answer['error'])[:300]}" if answer.get("error") else ""
        message = (
            f"the running agent (version {version}) answered in another format{said}; "
            f"this operator-use is version {package_version()}"
        )
        _fail(as_json, 1, message, running=True, home=str(home), version=version, answer=answer)
    if as_json:
        typer.echo(json.dumps({"running": True, **info.model_dump(mode="json")}, indent=2))
        return
    typer.echo(f"operator-use {info.version} running (pid {info.pid}) on {info.home}, up {_duration(info.uptime)}")
    typer.echo(f"Model: {info.model}")
    typer.echo("Channels: " + (", ".join(f"{k} {v}" for k, v in info.channels.items()) or "none"))
    typer.echo(f"Turns: {info.turns_running} running, {info.turns_done} done")
    if info.conversations:
        typer.echo("Conversations with work:")
        for lane in info.conversations:
            typer.echo(f"  {lane.key}: {'turn running' if lane.running else 'waiting'}, {lane.queued} queued")
    if info.outgoing:
        typer.echo("Replies being delivered:")
        for out in info.outgoing:
            typer.echo(f"  {out.key}: {out.queued} queued")
    if info.bus_incoming is not None:
        typer.echo(f"Bus: {info.bus_incoming} incoming, {info.bus_outgoing} outgoing waiting")
