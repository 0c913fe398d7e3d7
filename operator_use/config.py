"""Configuration: `config.yaml` in the data directory plus `OPERATOR_*` environment variables.

The data directory is `~/.operator-use` unless `OPERATOR_HOME` says otherwise. Environment variables
override the file and use `__` for nesting: `OPERATOR_LLM__MODEL=gpt-4o-mini`,
`OPERATOR_CHANNELS__CLI__ALLOW_FROM='["*"]'`. Secrets are `SecretStr` and print masked.

Every section refuses keys it does not define (config_model.StrictModel) and config_errors.py words each
problem for people: the key, where it was set, and the setting probably meant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .channels.cli import CLIConfig
from .channels.discord.config import DiscordConfig
from .channels.mqtt.config import MQTTConfig
from .channels.slack.config import SlackConfig
from .channels.telegram.config import TelegramConfig
from .channels.twitch import TwitchConfig
from .channels.web.config import WebConfig
from .config_errors import describe, unknown_variable
from .config_model import FieldProblem, StrictModel
from .control.config import ControlConfig
from .logs import LoggingConfig
from .providers.llm.presets import PRESETS, get_preset
from .safe_yaml import YAMLRefused
from .safe_yaml import load as load_yaml
from .security.config import ApprovalsConfig, SecurityConfig
from .security.redact import strip_url_credentials
from .tools.config import ToolsConfig
from .voice.config import VoiceConfig

CONFIG_FILE = "config.yaml"


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending keys."""


def data_home() -> Path:
    # Matched in any case, the last one set winning, as pydantic-settings reads every other OPERATOR_* variable
    # (Config.home is this same value: _EnvSource).
    raw = next((os.environ[k] for k in reversed(list(os.environ)) if k.upper() == "OPERATOR_HOME"), None)
    try:
        return Path(raw or Path.home() / ".operator-use").expanduser()
    except RuntimeError:  # "~name" of no user, or no home directory at all
        raise ConfigError(
            f"OPERATOR_HOME names a home directory that does not exist: {raw}"
            if raw
            else "No home directory: set HOME or OPERATOR_HOME"
        ) from None


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _check_model_source(provider: str | None, base_url: str | None) -> None:
    """A provider must be a known preset unless a base_url says where the server is; a base_url must be one."""
    if base_url is not None and not base_url.strip().lower().startswith(("http://", "https://")):
        raise FieldProblem("base_url", f'"{_without_userinfo(base_url)}" is not an http:// or https:// URL')
    if provider is not None and get_preset(provider) is None and not base_url:
        raise FieldProblem(
            "provider",
            f'"{provider}" is not one of {", ".join(PRESETS)}; for any other OpenAI-compatible server '
            "set base_url (the provider can then be left out)",
        )


def _without_userinfo(url: str) -> str:
    """The URL as shown: its user:password@ masked, with a scheme (strip_url_credentials) or without one."""
    shown = strip_url_credentials(url)
    authority = shown.split("/", 1)[0]
    if "://" not in shown and "@" in authority:
        shown = "***@" + shown.split("@", authority.count("@"))[-1]
    return shown


class ModelRef(StrictModel):
    """One model at one provider (a preset name such as openai, anthropic, groq, ollama...)."""

    provider: str
    model: str | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None

    @model_validator(mode="after")
    def _known_provider(self) -> ModelRef:
        _check_model_source(self.provider, self.base_url)
        return self


class LLMConfig(StrictModel):
    # None: detect from API keys in the environment and local servers on their usual ports.
    provider: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None
    # Tried in order when the main model is overloaded, rate limited, timing out or failing with 5xx.
    fallbacks: list[ModelRef] = Field(default_factory=list)
    max_tokens: int = Field(4096, ge=1)
    context_window: int = Field(128_000, ge=1)
    timeout: float = Field(120.0, gt=0)
    # Limits on each model call (0: off; null in YAML means the default). A call may take call_deadline seconds
    # in all; idle_timeout is the longest wait for the next piece of output (keep-alive comments and pings do
    # not count; before the first piece, the next fallback model is tried); max_output_chars caps its text and
    # tool calls; max_tool_calls caps the tool calls one reply may ask for.
    call_deadline: float = Field(600.0, ge=0)
    idle_timeout: float = Field(120.0, ge=0)
    max_output_chars: int = Field(100_000, ge=0)
    max_tool_calls: int = Field(64, ge=0)
    circuit_failures: int = Field(3, ge=1)
    circuit_cooldown: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _known_provider(self) -> LLMConfig:
        _check_model_source(self.provider, self.base_url)
        return self


class AgentConfig(StrictModel):
    max_iterations: int = Field(20, ge=1, le=500)
    # Conversations whose turns may run at the same time (each conversation runs one turn at a time).
    max_concurrent_turns: int = Field(8, ge=1)
    # None: <data home>/workspace
    workspace: Path | None = None
    # False lifts the file tools' workspace confinement.
    sandbox: bool = True
    shell_timeout: int = Field(60, ge=1, le=3600)
    # This agent's name (roles grant agents by name).
    name: str = "main"
    # Tools this agent has: names or patterns, or "*" for every built-in tool.
    tools: list[str] | Literal["*"] = "*"
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)


class ChannelsConfig(StrictModel):
    cli: CLIConfig = Field(default_factory=CLIConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    discord: DiscordConfig = Field(default_factory=DiscordConfig)
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    twitch: TwitchConfig = Field(default_factory=TwitchConfig)


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OPERATOR_", env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )

    home: Path = Field(default_factory=data_home)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    # Also accepted in any case ("debug").
    log_level: LogLevel = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)

    @property
    def workspace(self) -> Path:
        return (self.agent.workspace or self.home / "workspace").expanduser()

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: explicit arguments, then the environment, then the file.
        return init_settings, _EnvSource(settings_cls), _YamlSource(settings_cls)

    def masked(self) -> dict[str, Any]:
        """The resolved configuration with secrets shown as '**********'."""
        return self.model_dump(mode="json")


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _read_file(data_home() / CONFIG_FILE)


def _read_file(path: Path) -> dict[str, Any]:
    """The settings in the config file ({} without one); ConfigError when it cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        data = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    except YAMLRefused as exc:
        raise ConfigError(f"{path} is refused: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a mapping of settings, not {type(data).__name__}")
    problem = _non_text_key(data)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return _drop_nulls(data)


def _non_text_key(data: Any, where: str = "") -> str | None:
    """The first key that YAML read as something other than text (`1:`, `true:`, `null:`), said plainly; such
    a key names no setting, and at the top level it would crash the settings machinery."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            found = _non_text_key(item, f"{where}[{i}]")
            if found:
                return found
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if not isinstance(key, str):
            shown = yaml.safe_dump(key, default_flow_style=True).removesuffix("\n...\n").strip()
            place = f"under {where}" if where else "at the top level"
            return f'key {shown} {place} is not a setting name (a setting name is text; quote it: "{shown}")'
        found = _non_text_key(value, f"{where}.{key}" if where else key)
        if found:
            return found
    return None


class _BadVariable(ValueError):
    """An OPERATOR_* value pydantic-settings could not decode, with the variable's name (its own error names
    only the top-level field)."""


class _EnvSource(EnvSettingsSource):
    def __call__(self) -> dict[str, Any]:
        prefix = self.env_prefix.lower()
        for name, value in sorted(self.env_vars.items()):
            if name.lower().startswith(prefix) and value and not _is_utf8(value):
                # Bytes the locale could not decode: they would fail later, in a request or on the console.
                raise ConfigError(f"{_real_name(name)} is not valid UTF-8 text")
        fields = list(self.settings_cls.model_fields)
        for name in sorted(self.env_vars):
            head = name.lower()[len(prefix) :].split(self.env_nested_delimiter or "__")[0]
            if name.lower().startswith(prefix) and head not in fields:
                # pydantic-settings passes over variables for no setting: a misspelt one would do nothing.
                raise ConfigError(unknown_variable(_real_name(name), fields, self.env_prefix.upper()))
            field = self.settings_cls.model_fields.get(head)
            nested = name.lower().startswith(prefix) and len(name) > len(prefix + head)
            if field is not None and nested and not _is_section(field.annotation):
                # pydantic-settings would pass over OPERATOR_HOME__X: a setting that is one value has no keys.
                raise ConfigError(
                    f"{_real_name(name)}: {head} is one value, not a section with settings below it; "
                    f"set {self.env_prefix.upper()}{head.upper()} instead, or unset it"
                )
        data = super().__call__()
        if "home" in data:
            # The directory whose config.yaml is read, in whatever case the variable is spelt ("" too).
            data["home"] = data_home()
        return data

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except RecursionError:
            raise _BadVariable(self._problem(field_name, value, "nested too deeply")) from None
        except json.JSONDecodeError as exc:
            raise _BadVariable(self._problem(field_name, value, exc.msg)) from None
        except ValueError as exc:  # an integer longer than Python converts
            raise _BadVariable(self._problem(field_name, value, str(exc).split(";")[0])) from None

    def _problem(self, field_name: str, value: str, reason: str) -> str:
        prefix, key = self.env_prefix.lower(), field_name.lower()
        names = sorted(
            n
            for n, v in self.env_vars.items()
            if v == value
            and n.lower().startswith(prefix)
            and (n.lower() == prefix + key or n.lower().endswith(f"{self.env_nested_delimiter}{key}"))
        )
        name = _real_name(names[0]) if names else f"the OPERATOR_* variable for {field_name}"
        return (
            f"{name} is not valid JSON ({reason}); lists and objects in variables are written as JSON, "
            f'e.g. \'["alice", "bob"]\''
        )


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _real_name(name: str) -> str:
    # pydantic-settings lowercases the names it reads: show the variable as it is set.
    return next((k for k in os.environ if k.lower() == name.lower()), name.upper())


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _drop_nulls(data: dict[str, Any]) -> dict[str, Any]:
    # A section whose keys are all commented out parses as null: that means "defaults", not an error.
    return {k: _drop_nulls(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


def load_config(**overrides: Any) -> Config:
    """Load and validate; raises ConfigError naming each offending key."""
    try:
        return Config(**overrides)
    except SettingsError as exc:
        if isinstance(exc.__cause__, _BadVariable):
            raise ConfigError(str(exc.__cause__)) from None
        raise ConfigError(f"Invalid OPERATOR_* environment variable: {exc}") from None
    except ValidationError as exc:
        path = data_home() / CONFIG_FILE
        try:
            data = _read_file(path)
        except ConfigError:  # changed since it was read: the keys are still named
            data = {}
        raise ConfigError(describe(exc, Config, file=path, file_data=data, env=os.environ, given=overrides)) from None


def default_config_yaml() -> str:
    """The commented starter file that `operator-use init` writes."""
    return """\
# operator-use configuration. Environment variables override it: OPERATOR_LLM__MODEL=..., etc.
llm:
  # provider: anthropic        # or openai, groq, mistral, openrouter, deepseek, gemini, ollama, lmstudio, vllm...
  # model: claude-sonnet-4-5
  # api_key: ...              # or the provider's usual variable (ANTHROPIC_API_KEY, OPENAI_API_KEY, ...)
  # fallbacks:
  #   - {provider: openai, model: gpt-4o-mini}
agent:
  max_iterations: 20
  max_concurrent_turns: 8
  # approvals: {allow: [run_shell]}   # by default run_shell asks in the chat first (/approve ID)
  # approvals: {prompt_file_writes: allow}   # by default writing SOUL.md, RULES.md, AGENTS.md, USER.md asks
channels:
  cli:
    enabled: true
  web:
    enabled: true
    port: 8765
  # mqtt:                      # requests on operator/agent/in/<client>, replies on .../out/<client>
  #   enabled: true
  #   host: 127.0.0.1
  #   allow_from: ["my-script"]
# voice:                       # voice notes (pip install operator-use[voice], [piper] for a natural voice)
#   mode: when_spoken          # off | when_spoken | always; per chat with /voice off|auto|always
#   tts: {provider: auto}      # auto | piper | espeak | openai | none
"""
