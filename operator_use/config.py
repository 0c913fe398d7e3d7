"""Configuration: `config.yaml` in the data directory plus `OPERATOR_*` environment variables.

The data directory is `~/.operator-use` unless `OPERATOR_HOME` says otherwise. Environment variables
override the file and use `__` for nesting: `OPERATOR_LLM__MODEL=gpt-4o-mini`,
`OPERATOR_CHANNELS__CLI__ALLOW_FROM='["*"]'`. Secrets are `SecretStr` and print masked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .channels.cli import CLIConfig
from .channels.discord.config import DiscordConfig
from .channels.mqtt.config import MQTTConfig
from .channels.slack.config import SlackConfig
from .channels.telegram.config import TelegramConfig
from .channels.twitch import TwitchConfig
from .channels.web.config import WebConfig
from .security.config import ApprovalsConfig, SecurityConfig
from .tools.config import ToolsConfig
from .voice.config import VoiceConfig

CONFIG_FILE = "config.yaml"


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending keys."""


def data_home() -> Path:
    return Path(os.environ.get("OPERATOR_HOME") or Path.home() / ".operator-use").expanduser()


class ModelRef(BaseModel):
    """One model at one provider (a preset name such as openai, anthropic, groq, ollama...)."""

    provider: str
    model: str | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None


class LLMConfig(BaseModel):
    # None: detect from API keys in the environment and local servers on their usual ports.
    provider: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None
    # Tried in order when the main model is overloaded, rate limited, timing out or failing with 5xx.
    fallbacks: list[ModelRef] = Field(default_factory=list)
    max_tokens: int = 4096
    context_window: int = 128_000
    timeout: float = 120.0
    circuit_failures: int = 3
    circuit_cooldown: float = 60.0


class AgentConfig(BaseModel):
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


class ChannelsConfig(BaseModel):
    cli: CLIConfig = Field(default_factory=CLIConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    discord: DiscordConfig = Field(default_factory=DiscordConfig)
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    twitch: TwitchConfig = Field(default_factory=TwitchConfig)


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_", env_nested_delimiter="__", extra="forbid",
                                      nested_model_default_partial_update=True)

    home: Path = Field(default_factory=data_home)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    voice: VoiceConfig = Field(default_factory=VoiceConfig)
    log_level: str = "INFO"

    @property
    def workspace(self) -> Path:
        return (self.agent.workspace or self.home / "workspace").expanduser()

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: explicit arguments, then the environment, then the file.
        return init_settings, env_settings, _YamlSource(settings_cls)

    def masked(self) -> dict[str, Any]:
        """The resolved configuration with secrets shown as '**********'."""
        return self.model_dump(mode="json")


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = data_home() / CONFIG_FILE
        if not path.exists():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must contain a mapping of settings, not {type(data).__name__}")
        return _drop_nulls(data)


def _drop_nulls(data: dict[str, Any]) -> dict[str, Any]:
    # A section whose keys are all commented out parses as null: that means "defaults", not an error.
    return {k: _drop_nulls(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


def load_config(**overrides: Any) -> Config:
    """Load and validate; raises ConfigError naming each offending key."""
    try:
        return Config(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(root)"
            problems.append(f"  {key}: {err['msg']}")
        where = f"{data_home() / CONFIG_FILE} or OPERATOR_* environment variables"
        raise ConfigError(f"Invalid configuration ({where}):\n" + "\n".join(problems)) from None


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
