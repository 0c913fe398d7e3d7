"""Live checks of what the configuration names: does the model answer, does each platform take its token.

Used by `onboard` (before anything is written) and `doctor`. A probe never raises and never hangs: every
request has a short timeout, and every failure becomes a `Probe` whose one-line detail is for the user and
never contains a secret. `ok` is None when the check could not be made (the platform is unreachable), so
"your token is wrong" is only said when the platform said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from ..config import Config

# Seconds one platform request may take; a model call gets longer (a cold local model loads first).
HTTP_TIMEOUT = 10.0
MODEL_TIMEOUT = 60.0

DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
DISCORD_API = "https://discord.com/api/v10"
TWITCH_ID = "https://id.twitch.tv/"


@dataclass(frozen=True)
class Probe:
    ok: bool | None  # None: could not check (platform unreachable, no network)
    detail: str  # one line for the user


class _Unreachable(Exception):
    """The platform did not answer (connection refused, DNS, timeout): ok None."""


# --- the model ------------------------------------------------------------------------------------


async def probe_model(config: Config, seconds: float = MODEL_TIMEOUT) -> Probe:
    """Build the configured LLM (detection included, fallbacks left out) and ask it for one short reply;
    `seconds` seconds in all (a server that accepts and never answers costs no more)."""
    try:
        probe = await asyncio.wait_for(_probe_model(config, seconds), seconds)
    except TimeoutError:
        probe = Probe(False, f"the model gave no answer within {seconds:g} seconds")
    except Exception as exc:  # noqa: BLE001 — a probe reports, it never raises
        probe = Probe(False, f"the model could not be checked: {_one_line(exc)}")
    # A provider's error text may quote the key it was given, a URL its user:password.
    return Probe(probe.ok, _mask(probe.detail, _secrets(config.llm)))


def model_url(provider: str | None, base_url: str | None) -> str:
    from ..providers.llm.presets import get_preset

    if base_url:
        return base_url
    preset = get_preset(provider) if provider else None
    if preset is None:
        return "?"
    return preset.base_url or DEFAULT_URLS.get(preset.name, "?")


async def _probe_model(config: Config, seconds: float) -> Probe:
    from ..messages import HumanMessage
    from ..providers.llm.base import AuthError, ConnectionError_, LLMError, TextChunk, TimeoutError_
    from ..providers.llm.setup import llm_from_config

    # A few tokens are enough to know the key, the URL and the model name are right.
    settings = config.llm.model_copy(update={"fallbacks": [], "max_tokens": 16, "timeout": seconds})
    llm, reason = await llm_from_config(settings, config_file=config.config_path)
    if llm is None:
        return Probe(False, reason.strip().splitlines()[0])
    where = model_url(llm.provider, config.llm.base_url)
    try:
        async with contextlib.aclosing(llm.stream([HumanMessage(content="Reply with the word OK.")])) as stream:
            async for chunk in stream:
                if isinstance(chunk, TextChunk):
                    break
    except AuthError:
        return Probe(False, f"{llm.label}: the API key was refused ({where})")
    except TimeoutError_:
        return Probe(False, f"{llm.label}: no answer from {where} within {seconds:g} seconds")
    except ConnectionError_:
        return Probe(False, f"{llm.label}: cannot reach {where}")
    except LLMError as exc:
        # The error's own text starts with the model's label already: said once.
        return Probe(False, f"{llm.label} at {where}: {_one_line(exc).removeprefix(llm.label + ': ')}")
    finally:
        with contextlib.suppress(Exception):
            await llm.aclose()
    return Probe(True, f"{llm.label} answers ({reason})")


# --- the channels ---------------------------------------------------------------------------------


async def probe_channel(name: str, config: Config, seconds: float = HTTP_TIMEOUT * 3) -> Probe:
    """Check the channel's credentials against its platform (or its broker), in `seconds` seconds at most."""
    checks = {
        "telegram": _telegram,
        "discord": _discord,
        "slack": _slack,
        "twitch": _twitch,
        "mqtt": _mqtt,
        "web": _web,
        "cli": _cli,
    }
    check = checks.get(name)
    if check is None:
        return Probe(False, f"there is no channel named {name!r} (known: {', '.join(checks)})")
    secrets = _secrets(getattr(config.channels, name))
    try:
        probe = await asyncio.wait_for(check(config), seconds)
    except (_Unreachable, TimeoutError) as exc:
        probe = Probe(None, str(exc) or f"{name}: no answer within {seconds:g} seconds")
    except Exception as exc:  # noqa: BLE001 — a probe reports, it never raises
        probe = Probe(False, f"{name} could not be checked: {_one_line(exc)}")
    return Probe(probe.ok, _mask(probe.detail, secrets))


async def _telegram(config: Config) -> Probe:
    c = config.channels.telegram
    if c.token is None:
        return Probe(False, "telegram: no token (channels.telegram.token, from @BotFather)")
    body = await telegram_call(c.base_url, c.token.get_secret_value(), "getMe", {})
    if body.get("ok") and isinstance(body.get("result"), dict):
        bot = body["result"]
        return Probe(True, f"telegram: the token belongs to @{bot.get('username')} (id {bot.get('id')})")
    if body.get("error_code") in (401, 404):
        return Probe(False, "telegram: the token was refused (copy it again from @BotFather)")
    return Probe(False, f"telegram: getMe failed: {body.get('description') or 'no reason given'}")


async def telegram_call(
    base_url: str, token: str, method: str, params: dict[str, Any], *, read_seconds: float = HTTP_TIMEOUT
) -> dict[str, Any]:
    """One Bot API call; its JSON body (`ok`, `result` or `error_code`, `description`). The URL holds the
    token, so nothing about the request itself goes into an error. `read_seconds` leaves a long poll time."""
    async with _client(read_seconds) as http:
        response = await _send(http, "POST", f"{base_url}{token}/{method}", "Telegram", json=params)
    return _json_object(response, "Telegram")


async def _discord(config: Config) -> Probe:
    c = config.channels.discord
    if c.token is None or not c.token.get_secret_value():
        return Probe(False, "discord: no token (channels.discord.token, from the developer portal)")
    response = await _get(f"{c.api_base_url or DISCORD_API}/users/@me", "Discord", f"Bot {c.token.get_secret_value()}")
    if response.status_code == 401:
        return Probe(False, "discord: the token was refused (developer portal → Bot → Reset Token)")
    if response.status_code != 200:
        return Probe(False, f"discord: GET /users/@me answered HTTP {response.status_code}")
    user = _json_object(response, "Discord")
    return Probe(True, f"discord: the token belongs to {user.get('username')} (id {user.get('id')})")


async def _slack(config: Config) -> Probe:
    c = config.channels.slack
    if c.bot_token is None or not c.bot_token.get_secret_value():
        return Probe(False, "slack: no bot_token (xoxb-..., OAuth & Permissions)")
    async with _client() as http:
        auth = await _slack_call(http, c.api_base_url, "auth.test", c.bot_token.get_secret_value())
        if not auth.get("ok"):
            return Probe(False, f"slack: the bot token was refused ({auth.get('error') or 'no reason given'})")
        detail = f"slack: bot {auth.get('user')} in {auth.get('team')}"
        if c.mode == "socket":
            if c.app_token is None or not c.app_token.get_secret_value():
                return Probe(False, f"{detail}; no app_token (xapp-..., needed for socket mode)")
            opened = await _slack_call(http, c.api_base_url, "apps.connections.open", c.app_token.get_secret_value())
            if not opened.get("ok"):
                return Probe(False, f"{detail}; the app token was refused ({opened.get('error') or 'no reason given'})")
            detail += "; socket mode allowed"
    return Probe(True, detail)


async def _slack_call(http: httpx.AsyncClient, base_url: str, method: str, token: str) -> dict[str, Any]:
    response = await _send(http, "POST", base_url + method, "Slack", headers={"Authorization": f"Bearer {token}"})
    return _json_object(response, "Slack")


async def _twitch(config: Config) -> Probe:
    c = config.channels.twitch
    if c.access_token is None or not c.access_token.get_secret_value():
        return Probe(False, "twitch: no access_token (the bot account's user token)")
    response = await _get(
        f"{(c.id_url or TWITCH_ID).rstrip('/')}/oauth2/validate", "Twitch", f"OAuth {c.access_token.get_secret_value()}"
    )
    if response.status_code == 401:
        renew = " (the agent renews it with refresh_token)" if c.refresh_token and c.client_secret else ""
        return Probe(False, f"twitch: the access token was refused or has expired{renew}")
    if response.status_code != 200:
        return Probe(False, f"twitch: token validation answered HTTP {response.status_code}")
    info = _json_object(response, "Twitch")
    if c.client_id and info.get("client_id") != c.client_id:
        return Probe(False, "twitch: the access token was issued to another client_id")
    if c.bot_id and info.get("user_id") != c.bot_id:
        return Probe(False, f"twitch: the access token belongs to user {info.get('user_id')}, not bot_id {c.bot_id}")
    if not info.get("user_id"):
        return Probe(False, "twitch: this is an app token; the bot needs a user access token")
    return Probe(True, f"twitch: the token belongs to {info.get('login')} (id {info.get('user_id')})")


async def _mqtt(config: Config) -> Probe:
    c = config.channels.mqtt
    try:
        import aiomqtt
    except ImportError:
        return Probe(False, "mqtt: aiomqtt is not installed (pip install 'operator-use[mqtt]')")
    from ..channels.mqtt.client_options import client_options

    client = aiomqtt.Client(
        c.host,
        c.port,
        # Not the agent's own id, and a clean session (aiomqtt's default): a probe must not take over (or
        # end) the agent's persistent session.
        identifier=f"operator-use-probe-{uuid.uuid4().hex[:8]}",
        timeout=min(c.timeout, HTTP_TIMEOUT),
        **client_options(c),
    )
    where = f"{c.host}:{c.port}"
    try:
        async with client:
            pass
    except aiomqtt.MqttCodeError as exc:
        return Probe(False, f"mqtt: the broker at {where} refused the connection ({exc})")
    except (aiomqtt.MqttError, OSError) as exc:
        raise _Unreachable(f"mqtt: cannot reach the broker at {where} ({_one_line(exc)})") from None
    return Probe(True, f"mqtt: connected to the broker at {where}")


async def _web(config: Config) -> Probe:
    c = config.channels.web
    return Probe(True, f"web: served by this machine on http://{c.host}:{c.port}/ (nothing to check remotely)")


async def _cli(config: Config) -> Probe:
    return Probe(True, "cli: the terminal chat (operator-use chat), nothing to check")


# --- helpers --------------------------------------------------------------------------------------


def _client(read_seconds: float = HTTP_TIMEOUT) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(HTTP_TIMEOUT, read=read_seconds), follow_redirects=False)


async def _get(url: str, service: str, authorization: str) -> httpx.Response:
    """One GET with the token in the Authorization header (the caller reads the status)."""
    async with _client() as http:
        return await _send(http, "GET", url, service, headers={"Authorization": authorization})


async def _send(http: httpx.AsyncClient, method: str, url: str, platform: str, **kw: Any) -> httpx.Response:
    import httpx

    try:
        return await http.request(method, url, **kw)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        # A mistake in the configuration, not a platform that is down.
        raise ValueError(f"{platform}'s API URL is not a valid http(s) URL: {_host(url)}") from None
    except httpx.TimeoutException:
        raise _Unreachable(f"{platform.lower()}: no answer within {HTTP_TIMEOUT:g} seconds") from None
    except (httpx.TransportError, OSError) as exc:
        # The URL may hold a token (Telegram's does): only the host is named.
        raise _Unreachable(f"{platform.lower()}: cannot reach {_host(url)} ({type(exc).__name__})") from None


def _json_object(response: httpx.Response, platform: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValueError(f"{platform} answered HTTP {response.status_code} with something that is not its API's JSON")
    return body


def _host(url: str) -> str:
    """Scheme, host and port of `url`: never its path, where Telegram puts the token."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except Exception:  # noqa: BLE001 — an unparsable URL is named as such
        return "(unparsable)"
    if not parsed.host:
        return f"{parsed.scheme or '(no scheme)'}://(no host)"
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


def _secrets(section: object) -> list[str]:
    from pydantic import BaseModel, SecretStr

    if not isinstance(section, BaseModel):
        return []
    values = [getattr(section, f) for f in type(section).model_fields]
    return [v.get_secret_value() for v in values if isinstance(v, SecretStr) and v.get_secret_value()]


def _mask(text: str, secrets: list[str]) -> str:
    from ..security.redact import strip_url_credentials

    for secret in secrets:
        text = text.replace(secret, "**********")
    return strip_url_credentials(text)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]
