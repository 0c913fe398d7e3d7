"""`operator-use onboard`: from nothing to a working agent, with every answer checked live before it is kept.

It picks the model (what `run` would detect, a preset, or any OpenAI-compatible server), makes one real
call to it, optionally sets up one chat channel (the token checked against the platform; the owner's id
put in the allow list and the admins, found for Telegram from a message the owner sends the bot), then
writes `config.yaml` (mode 0600, atomically, never over an existing one without consent) and the
workspace, and says which command starts the agent. `--non-interactive` takes the same answers as flags
and exits 1 on the first one that does not work, having written nothing.

Each step runs its own short `asyncio.run`: prompts block, so they must never run inside an event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from ..config import Config
    from .probes import Probe

CHANNELS = ("telegram", "discord", "slack", "twitch", "mqtt", "web", "none")
# channel -> (pyproject extra, the module that extra installs)
EXTRAS = {
    "telegram": ("telegram", "telegram"),
    "discord": ("discord", "discord"),
    "slack": ("slack", "slack_bolt"),
    "twitch": ("twitch", "twitchio"),
    "mqtt": ("mqtt", "aiomqtt"),
}
COMPATIBLE = "openai-compatible"
# How long onboarding waits for the owner's first message to the Telegram bot.
OWNER_WAIT = 180.0

OWNER_HINTS = {
    "telegram": "your Telegram user id (a number; @userinfobot tells it)",
    "discord": "your Discord user id (Settings > Advanced > Developer Mode, then right-click your name > Copy User ID)",
    "slack": "your Slack member id (your profile > ... > Copy member ID, like U0123ABCD)",
    "twitch": "your Twitch user id (a number)",
    "mqtt": "the MQTT client name allowed to talk to the agent (the level after .../in/ in its topic)",
}


class Failed(Exception):
    """A non-interactive answer did not work: the message is printed and the command exits 1."""


@dataclass
class Flags:
    non_interactive: bool
    provider: str | None = None
    model: str | None = None
    api_key: str | None = None
    base_url: str | None = None
    channel: str | None = None
    channel_token: str | None = None
    channel_api_url: str | None = None
    slack_app_token: str | None = None
    twitch_client_id: str | None = None
    twitch_channel: str | None = None
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    owner_id: str | None = None
    force: bool = False
    no_web: bool = False


@dataclass
class Plan:
    """What goes into config.yaml."""

    llm: dict[str, Any] = field(default_factory=dict)
    channel: str = "none"
    section: dict[str, Any] = field(default_factory=dict)
    # The local web chat the README promises stays on beside the chosen channel unless turned off.
    web: bool = True

    def data(self) -> dict[str, Any]:
        channels: dict[str, Any] = {"web": {"enabled": self.web or self.channel == "web"}}
        if self.channel not in ("none", "web"):
            channels[self.channel] = self.section
        return {"llm": {k: v for k, v in self.llm.items() if v is not None}, "channels": channels}


# --- asking ---------------------------------------------------------------------------------------


class Asker:
    """Prompts in the terminal, or, non-interactive, the flag's value and a `Failed` when there is none."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def text(
        self, label: str, given: str | None, *, flag: str, default: str | None = None, secret: bool = False
    ) -> str:
        if given is not None and given.strip():
            return given.strip()
        if not self.interactive:
            if default is not None:
                return default
            raise Failed(f"{label}: give {flag}")
        while True:
            answer = str(typer.prompt(label, default=default, hide_input=secret, show_default=not secret)).strip()
            if answer:
                return answer
            typer.echo("  (an answer is needed)")

    def optional(self, label: str, given: str | None, *, secret: bool = False) -> str | None:
        if given is not None or not self.interactive:
            return given.strip() or None if given is not None else None
        answer = str(typer.prompt(label, default="", hide_input=secret, show_default=False)).strip()
        return answer or None

    def confirm(self, label: str, *, default: bool) -> bool:
        return bool(typer.confirm(label, default=default)) if self.interactive else default

    def retry(self, problem: str) -> None:
        """A checked answer did not work: say why, then ask again (or give up, non-interactive)."""
        if not self.interactive:
            raise Failed(problem)
        typer.echo(f"  Problem: {problem}")
        if not typer.confirm("  Try again?", default=True):
            raise typer.Exit(1)


# --- the command ----------------------------------------------------------------------------------


def onboard(
    non_interactive: bool = typer.Option(
        False, "--non-interactive", help="Take every answer from the flags; exit 1 on the first that does not work."
    ),
    provider: str | None = typer.Option(
        None, help="Model provider: anthropic, openai, groq, ollama, lmstudio... or openai-compatible."
    ),
    model: str | None = typer.Option(None, help="Model name (default: the provider's, or the server's first)."),
    api_key: str | None = typer.Option(None, help="The provider's API key (else its usual variable is used)."),
    base_url: str | None = typer.Option(None, help="The model server's URL (local or OpenAI-compatible servers)."),
    channel: str | None = typer.Option(None, help=f"One chat channel to set up: {', '.join(CHANNELS)}."),
    channel_token: str | None = typer.Option(
        None, help="Its token (Telegram, Discord, Slack bot token xoxb-, Twitch access token)."
    ),
    channel_api_url: str | None = typer.Option(
        None, help="The platform's API base, for a self-hosted Bot API server or a proxy (Telegram, Discord, Slack)."
    ),
    slack_app_token: str | None = typer.Option(None, help="Slack app-level token (xapp-) for socket mode."),
    twitch_client_id: str | None = typer.Option(None, help="Twitch application client id."),
    twitch_channel: str | None = typer.Option(None, help="Twitch channel (login) the bot chats in."),
    mqtt_host: str | None = typer.Option(None, help="MQTT broker host."),
    mqtt_port: int | None = typer.Option(None, help="MQTT broker port."),
    mqtt_username: str | None = typer.Option(None, help="MQTT username."),
    mqtt_password: str | None = typer.Option(None, help="MQTT password."),
    owner_id: str | None = typer.Option(None, help="Your user id on the channel: allowed, and admin."),
    force: bool = typer.Option(False, "--force", help="Replace an existing config.yaml without asking."),
    no_web: bool = typer.Option(False, "--no-web", help="Turn the local web chat off (it is on by default)."),
) -> None:
    """Set up the model and one chat channel, checking each live, and write config.yaml."""
    flags = Flags(
        non_interactive=non_interactive,
        provider=provider,
        model=model,
        api_key=api_key,
        base_url=base_url,
        channel=channel,
        channel_token=channel_token,
        channel_api_url=channel_api_url,
        slack_app_token=slack_app_token,
        twitch_client_id=twitch_client_id,
        twitch_channel=twitch_channel,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        mqtt_username=mqtt_username,
        mqtt_password=mqtt_password,
        owner_id=owner_id,
        force=force,
        no_web=no_web,
    )
    if not non_interactive and not sys.stdin.isatty():
        typer.echo(
            "operator-use onboard asks its questions in a terminal, and stdin is not one; "
            "give the answers as flags with --non-interactive (see --help).",
            err=True,
        )
        raise typer.Exit(1)
    try:
        _onboard(flags, Asker(not non_interactive))
    except Failed as exc:
        typer.echo(f"Error: {exc}", err=True)
        typer.echo("Nothing was written.", err=True)
        raise typer.Exit(1) from None


def _onboard(flags: Flags, ask: Asker) -> None:
    from ..config import CONFIG_FILE, ConfigError, data_home

    try:
        home = data_home()
    except ConfigError as exc:
        raise Failed(str(exc)) from None
    path = home / CONFIG_FILE
    # Asked first, so nobody answers every question to be refused at the end.
    if path.exists() and not flags.force:
        if not ask.interactive:
            raise Failed(f"{path} exists; --force replaces it")
        if not typer.confirm(f"{path} exists. Replace it?", default=False):
            typer.echo(f"Kept {path}; nothing changed.")
            return
    plan = Plan()
    plan.llm = _choose_model(flags, ask, home)
    plan.channel, plan.section = _choose_channel(flags, ask, home)
    plan.web = _choose_web(flags, ask, plan.channel)
    _write(path, home, plan)
    typer.echo(f"Wrote {path} (readable by you only: it holds secrets)")
    _finish(plan.channel)


# --- the model ------------------------------------------------------------------------------------


def _choose_model(flags: Flags, ask: Asker, home: Path) -> dict[str, Any]:
    provider, last = flags.provider, None
    while True:
        llm = _model_answers(flags, ask, provider, last=last)
        typer.echo(f"Checking the model ({llm.get('provider') or COMPATIBLE}/{llm.get('model')})...")
        probe = asyncio.run(_probe_model(home, llm))
        if probe.ok:
            typer.echo(f"  OK: {probe.detail}")
            return llm
        ask.retry(f"the model check failed: {probe.detail}")
        # Asked again from the provider on, the last one as the default; the flags are used up.
        provider, last = llm.get("provider") or COMPATIBLE, llm
        flags = Flags(non_interactive=False)


def _model_answers(
    flags: Flags, ask: Asker, provider: str | None, *, last: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `llm` section from the flags and the answers; `last` holds the answers of a try that failed its
    check, offered as the defaults (except the key, asked again)."""
    from ..providers.llm.detect import KEY_ORDER, LOCAL_ORDER, detect_llm, explain_no_llm
    from ..providers.llm.presets import PRESETS, get_preset

    choices = [*KEY_ORDER, *(n for n in PRESETS if n not in KEY_ORDER and n not in LOCAL_ORDER), *LOCAL_ORDER]
    choices.append(COMPATIBLE)
    retrying = last is not None
    last = last or {}
    if retrying:
        typer.echo("Model providers: " + ", ".join(choices))
        provider = ask.text("Provider", None, flag="--provider", default=provider)
    elif provider is None and flags.base_url is not None:
        provider = COMPATIBLE
    elif provider is None:
        found = asyncio.run(detect_llm(os.environ))
        if found is not None and ask.confirm(f"Found a model: {found.reason}. Use it?", default=True):
            provider = found.provider
            if PRESETS[found.provider].local:
                flags.base_url = found.base_url
            flags.model = flags.model or found.model
        elif not ask.interactive:
            raise Failed(explain_no_llm().splitlines()[0] + " Give --provider (and --api-key or --base-url).")
        else:
            typer.echo("Model providers: " + ", ".join(choices))
            provider = ask.text("Provider", None, flag="--provider", default="anthropic")
    preset = get_preset(provider)
    if preset is None and provider != COMPATIBLE:
        if not ask.interactive:
            raise Failed(f"unknown provider {provider!r}: use one of {', '.join(choices)}")
        typer.echo(f"  Unknown provider {provider!r}")
        return _model_answers(Flags(non_interactive=False), ask, "anthropic", last=last)

    base_url = flags.base_url  # a cloud provider's own endpoint unless given (a proxy, a test server)
    if preset is None or preset.local:
        default_url = last.get("base_url") or (preset.base_url if preset is not None else None)
        base_url = ask.text("Server URL (with its /v1)", flags.base_url, flag="--base-url", default=default_url)
        if preset is not None and base_url == preset.base_url:
            base_url = None

    key: str | None
    if preset is not None and preset.key_env:
        if flags.api_key:
            key = flags.api_key
        elif os.environ.get(preset.key_env, "").strip() and not retrying:
            typer.echo(f"  Using {preset.key_env} from the environment (not copied into config.yaml).")
            key = None
        else:
            key = ask.text(f"{preset.label} API key (hidden)", None, flag=f"--api-key or {preset.key_env}", secret=True)
    elif preset is not None and preset.local:
        key = flags.api_key
    else:
        key = ask.optional("API key, if the server wants one (hidden; Enter for none)", flags.api_key, secret=True)

    model = flags.model
    default = preset.default_model if preset is not None else None
    if model is None and (preset is None or preset.local):
        default = _server_model(ask, base_url or (preset.base_url if preset else None), key)
    if model is None:
        model = ask.text("Model", None, flag="--model", default=default or last.get("model"))
    return {
        "provider": preset.name if preset is not None else None,
        "model": model,
        "api_key": key,
        "base_url": base_url,
    }


def _server_model(ask: Asker, base_url: str | None, key: str | None) -> str | None:
    """The server's first model (its list shown when asking), or None when it cannot say. list_models bounds
    the request in time and size and leaves out ids unfit to print."""
    from ..providers.llm.discover import DiscoveryError, list_models, shown_ids
    from ..security.redact import strip_url_credentials

    if not base_url:
        return None
    try:
        models = asyncio.run(list_models(base_url, key))
    except DiscoveryError as exc:
        typer.echo(f"  Could not list the server's models: {exc}")  # its URL's user:password@ masked
        return None
    if not models:
        typer.echo(f"  {strip_url_credentials(base_url)} serves no model yet (with Ollama: ollama pull llama3.2)")
        return None
    if ask.interactive:
        typer.echo("  Models there: " + ", ".join(shown_ids(models)))
    return models[0]


async def _probe_model(home: Path, llm: dict[str, Any]) -> Probe:
    from .probes import Probe, probe_model

    try:
        config = _validated(home, Plan(llm=llm))
    except Failed as exc:
        return Probe(False, str(exc))
    return await probe_model(config)


# --- the channel ----------------------------------------------------------------------------------


def _choose_channel(flags: Flags, ask: Asker, home: Path) -> tuple[str, dict[str, Any]]:
    name = (flags.channel or "").strip().lower() or None
    if name is None:
        if not ask.interactive:
            return "none", {}
        typer.echo("Chat channels: " + ", ".join(CHANNELS) + " (the terminal chat is always there)")
    while name not in CHANNELS:
        if name is not None:
            if not ask.interactive:
                raise Failed(f"unknown channel {name!r}: use one of {', '.join(CHANNELS)}")
            typer.echo(f"  Unknown channel {name!r}")
        name = ask.text("Channel", None, flag="--channel", default="none").lower()
    if name in ("none", "web"):
        return name, {}
    if flags.channel_api_url and name not in ("telegram", "discord", "slack"):
        raise Failed(f"--channel-api-url is for telegram, discord and slack, not {name}")
    while True:
        section = _channel_answers(name, flags, ask)
        typer.echo(f"Checking {name}...")
        probe = asyncio.run(_probe_channel(home, name, section))
        if probe.ok:
            typer.echo(f"  OK: {probe.detail}")
            break
        if probe.ok is None:
            typer.echo(f"  Could not check it now ({probe.detail}); keeping it as given.")
            break
        ask.retry(probe.detail)
        flags = Flags(non_interactive=False, channel_api_url=flags.channel_api_url, owner_id=flags.owner_id)
    owner = _owner(name, section, flags, ask, checked=probe.ok is True)
    section.update(allow_from=[owner], admins=[owner])
    return name, section


def _choose_web(flags: Flags, ask: Asker, channel: str) -> bool:
    if channel == "web":
        on = True
    elif flags.no_web:
        on = False
    else:
        on = ask.confirm("Keep the local web chat on too?", default=True)
    typer.echo(
        "Local web chat: on (channels.web.enabled: true; its address is printed by `operator-use run`)"
        if on
        else "Local web chat: off (channels.web.enabled: false)"
    )
    return on


def _channel_answers(name: str, flags: Flags, ask: Asker) -> dict[str, Any]:
    section: dict[str, Any] = {"enabled": True}
    api = flags.channel_api_url
    if name == "telegram":
        section["token"] = ask.text(
            "Bot token from @BotFather (hidden)", flags.channel_token, flag="--channel-token", secret=True
        )
        if api:
            section["base_url"] = api
            section["base_file_url"] = api.removesuffix("/bot") + "/file/bot" if api.endswith("/bot") else api
    elif name == "discord":
        section["token"] = ask.text(
            "Bot token (developer portal > Bot; hidden)", flags.channel_token, flag="--channel-token", secret=True
        )
        if api:
            section["api_base_url"] = api
    elif name == "slack":
        section["bot_token"] = ask.text(
            "Bot token xoxb-... (hidden)", flags.channel_token, flag="--channel-token", secret=True
        )
        section["app_token"] = ask.text(
            "App-level token xapp-... for socket mode (hidden)",
            flags.slack_app_token,
            flag="--slack-app-token",
            secret=True,
        )
        section["mode"] = "socket"
        if api:
            section["api_base_url"] = api
    elif name == "twitch":
        section["client_id"] = ask.text("Application client id", flags.twitch_client_id, flag="--twitch-client-id")
        section["access_token"] = ask.text(
            "The bot account's user access token (hidden)", flags.channel_token, flag="--channel-token", secret=True
        )
        section["channels"] = [
            ask.text("Twitch channel (login) to chat in", flags.twitch_channel, flag="--twitch-channel")
        ]
    elif name == "mqtt":
        section["host"] = ask.text("Broker host", flags.mqtt_host, flag="--mqtt-host", default="127.0.0.1")
        port = ask.text(
            "Broker port", str(flags.mqtt_port) if flags.mqtt_port else None, flag="--mqtt-port", default="1883"
        )
        if not port.isdigit():
            raise Failed(f"the MQTT port must be a number, not {port!r}")
        section["port"] = int(port)
        username = ask.optional("Username (Enter for none)", flags.mqtt_username)
        if username:
            section["username"] = username
            password = ask.optional("Password (hidden)", flags.mqtt_password, secret=True)
            if password:
                section["password"] = password
    return section


async def _probe_channel(home: Path, name: str, section: dict[str, Any]) -> Probe:
    from .probes import Probe, probe_channel

    try:
        config = _validated(home, Plan(channel=name, section={**section, "allow_from": [], "admins": []}))
    except Failed as exc:
        return Probe(False, str(exc))
    return await probe_channel(name, config)


def _owner(name: str, section: dict[str, Any], flags: Flags, ask: Asker, *, checked: bool) -> str:
    if flags.owner_id:
        return _checked_owner(name, flags.owner_id.strip())
    if not ask.interactive:
        raise Failed(
            f"give --owner-id: {OWNER_HINTS[name]}; only that user may talk to the agent and run admin commands"
        )
    if (
        name == "telegram"
        and checked
        and typer.confirm("Find your Telegram user id now? (you send the bot a code)", default=True)
    ):
        found = _find_telegram_owner(section)
        if found is not None:
            return found
    while True:
        answer = ask.text(f"Owner: {OWNER_HINTS[name]}", None, flag="--owner-id")
        try:
            return _checked_owner(name, answer)
        except Failed as exc:
            typer.echo(f"  {exc}")


def _checked_owner(name: str, owner: str) -> str:
    if name in ("telegram", "discord", "twitch") and not owner.lstrip("-").isdigit():
        raise Failed(f"a {name} user id is a number, not {owner!r} (names can change hands; ids cannot)")
    if not owner or any(c.isspace() for c in owner):
        raise Failed(f"{owner!r} is not a user id")
    return owner


def _find_telegram_owner(section: dict[str, Any]) -> str | None:
    from ..channels.telegram.config import OFFICIAL_API

    base_url = section.get("base_url", OFFICIAL_API)
    # Anyone can message a bot: only the sender of this code, shown on this screen alone, is the owner.
    code = f"{secrets.randbelow(1_000_000):06d}"
    typer.echo(
        f"  Send the code {code} to your bot now (open it in Telegram from the link @BotFather gave you). "
        f"Waiting up to {OWNER_WAIT:.0f} seconds; Ctrl-C to type your id instead."
    )
    try:
        user = asyncio.run(find_telegram_owner(base_url, section["token"], OWNER_WAIT, code))
    except KeyboardInterrupt:
        typer.echo("")
        return None
    except Exception as exc:  # noqa: BLE001 — Telegram down, a webhook set...: the id is asked instead
        typer.echo(f"  Could not read the bot's messages: {exc}")
        return None
    if user is None:
        typer.echo("  The code did not arrive.")
        return None
    if typer.confirm(f"  The code came from {sender_name(user)}. Is that you?", default=True):
        return str(user["id"])
    return None


def sender_name(user: dict[str, Any]) -> str:
    """`Ada Lovelace @ada (id 777)`: the names are the sender's own choice, so each is shown escaped (no
    escape sequence, line break, bidi override or invisible character reaches the terminal) and shortened."""
    who = " ".join(shown(str(user.get(k)), 64) for k in ("first_name", "last_name") if user.get(k))
    handle = f" @{shown(str(user['username']), 64)}" if user.get("username") else ""
    return f"{who}{handle} (id {int(user['id'])})".strip()


def shown(text: str, limit: int = 200) -> str:
    """`text` safe to print: control and hidden characters (line breaks, ESC, bidi overrides, zero-width...)
    as \\x.. / \\u.... escapes, backslashes doubled, at most `limit` characters of it."""
    from ..security.preview import is_hidden

    out = []
    for ch in text[:limit]:
        n = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\n\t" or is_hidden(ch):
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(text) > limit else "")


async def find_telegram_owner(base_url: str, token: str, wait: float, code: str) -> dict[str, Any] | None:
    """The sender of the first private message to the bot whose text is `code`, within `wait` seconds
    (getUpdates long polling), or None. Other messages are passed over. The updates read are confirmed, so
    the agent does not answer them later."""
    from .probes import telegram_call

    deadline = time.monotonic() + wait
    offset: int | None = None
    while (left := deadline - time.monotonic()) > 0:
        params: dict[str, Any] = {"timeout": int(min(25, max(1, left))), "allowed_updates": ["message"]}
        if offset is not None:
            params["offset"] = offset
        body = await telegram_call(base_url, token, "getUpdates", params, read_seconds=params["timeout"] + 10)
        if not body.get("ok"):
            raise Failed(f"reading the bot's messages failed: {body.get('description') or 'no reason given'}")
        for update in body.get("result") or []:
            offset = max(offset or 0, int(update.get("update_id", 0)) + 1)
            message = update.get("message") or {}
            sender = message.get("from") or {}
            private = (message.get("chat") or {}).get("type") == "private"
            said = message.get("text")
            if private and isinstance(said, str) and said.strip() == code and _is_user(sender):
                await telegram_call(base_url, token, "getUpdates", {"offset": offset, "timeout": 0})
                return dict(sender)
    return None


def _is_user(sender: Any) -> bool:
    ident = sender.get("id") if isinstance(sender, dict) else None
    return isinstance(ident, int) and not isinstance(ident, bool) and not sender.get("is_bot")


# --- writing --------------------------------------------------------------------------------------


def _validated(home: Path, plan: Plan) -> Config:
    """The plan as the Config it becomes (only its own keys: neither the file nor the environment); a problem
    is worded as `load_config` words it (config_errors.py), on one line."""
    from pydantic import ValidationError

    from ..config import CONFIG_FILE, Config
    from ..config_errors import describe

    data = {**plan.data(), "home": home}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        text = describe(exc, Config, file=home / CONFIG_FILE, file_data={}, env={}, given=data, source="the answers")
        raise Failed("; ".join(line.strip() for line in text.splitlines()[1:])) from None


def _write(path: Path, home: Path, plan: Plan) -> None:
    import yaml

    from ..config import ConfigError, load_config
    from .loading import ensure_workspace_or_exit

    _validated(home, plan)
    text = (
        "# Written by `operator-use onboard`. It holds secrets: keep it private (mode 0600).\n"
        "# Every setting: docs/configuration in the project; environment variables OPERATOR_* override it.\n"
        + yaml.safe_dump(plan.data(), sort_keys=False, allow_unicode=True)
    )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, text)
    try:
        config = load_config()
    except ConfigError as exc:
        typer.echo(f"{path} was written, but the configuration does not load:\n{exc}", err=True)
        raise typer.Exit(2) from None
    ensure_workspace_or_exit(config)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable and writable by the owner only: a temporary file created
    0600 beside it, flushed to disk, then renamed over it (a crash leaves the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _finish(channel: str) -> None:
    extra = EXTRAS.get(channel)
    if extra is not None and importlib.util.find_spec(extra[1]) is None:
        typer.echo(
            f"The {channel} channel needs the '{extra[0]}' extra, which is not installed. Start with:\n"
            f"  make run EXTRAS=web,{extra[0]}      (in a checkout)\n"
            f"  pip install 'operator-use[{extra[0]}]' && operator-use run"
        )
    elif channel == "none":
        typer.echo("Next: operator-use chat      (talk to the agent in this terminal)")
    else:
        typer.echo("Next: operator-use run")
