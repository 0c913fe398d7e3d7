"""Known providers as data, and `make_llm` to build the right client for one of them.

Everything except Anthropic speaks the OpenAI chat-completions dialect, so a preset is only a base URL,
the env var holding its key and a sensible default model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from .base import LLM

# Local servers ignore the key, but the OpenAI SDK insists on having one.
LOCAL_KEY = "not-needed"


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    base_url: str | None
    key_env: str | None
    default_model: str | None
    label: str
    local: bool = False
    native: bool = False  # served by its own SDK rather than the OpenAI-compatible client


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("anthropic", None, "ANTHROPIC_API_KEY", "claude-sonnet-4-5", "Anthropic", native=True),
        Preset("openai", None, "OPENAI_API_KEY", "gpt-4o-mini", "OpenAI"),
        Preset("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "llama-3.3-70b-versatile", "Groq"),
        Preset("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", "mistral-small-latest", "Mistral"),
        Preset("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", "llama-3.3-70b", "Cerebras"),
        Preset("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "openai/gpt-4o-mini", "OpenRouter"),
        Preset("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "deepseek-chat", "DeepSeek"),
        Preset(
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "GEMINI_API_KEY",
            "gemini-2.5-flash",
            "Google Gemini",
        ),
        Preset(
            "together",
            "https://api.together.xyz/v1",
            "TOGETHER_API_KEY",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "Together AI",
        ),
        Preset(
            "fireworks",
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS_API_KEY",
            "accounts/fireworks/models/llama-v3p3-70b-instruct",
            "Fireworks",
        ),
        Preset("xai", "https://api.x.ai/v1", "XAI_API_KEY", "grok-3-mini", "xAI"),
        Preset("ollama", "http://127.0.0.1:11434/v1", None, None, "Ollama", local=True),
        Preset("lmstudio", "http://127.0.0.1:1234/v1", None, None, "LM Studio", local=True),
        Preset("llamacpp", "http://127.0.0.1:8080/v1", None, None, "llama.cpp", local=True),
        Preset("vllm", "http://127.0.0.1:8000/v1", None, None, "vLLM", local=True),
    )
}

# Accept the spellings people actually type.
ALIASES = {
    "claude": "anthropic",
    "google": "gemini",
    "grok": "xai",
    "lm-studio": "lmstudio",
    "lm_studio": "lmstudio",
    "llama.cpp": "llamacpp",
    "llama-cpp": "llamacpp",
    "together.ai": "together",
    "local": "ollama",
}


def get_preset(provider: str) -> Preset | None:
    name = provider.strip().lower()
    return PRESETS.get(ALIASES.get(name, name))


def make_llm(
    provider: str,
    model: str | None = None,
    api_key: str | SecretStr | None = None,
    base_url: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **kw: Any,
) -> LLM:
    """Build the client for `provider`. An unknown provider with a `base_url` is treated as OpenAI-compatible.

    `env` defaults to `os.environ`; tests pass their own.
    """
    env = os.environ if env is None else env
    preset = get_preset(provider)
    if preset is None and base_url is None:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown LLM provider {provider!r}: use one of {known}, or give a base_url")
    name = preset.name if preset else provider.strip().lower()
    model = model or (preset.default_model if preset else None)
    if not model:
        raise ValueError(f"no model given for provider {name!r} (local servers have no default model)")
    if api_key is None and preset is not None and preset.key_env:
        api_key = env.get(preset.key_env) or None
        if api_key is None:
            # Failing here names the missing variable; a 401 later would only say "bad key".
            raise ValueError(f"{preset.key_env} is not set (needed for provider {name!r})")

    if preset is not None and preset.native:
        from .anthropic import AnthropicLLM

        return AnthropicLLM(model, api_key, base_url=base_url, provider=name, **kw)

    from .openai import OpenAILLM

    if api_key is None and (preset is None or preset.local):
        api_key = LOCAL_KEY
    return OpenAILLM(model, api_key, base_url=base_url or (preset.base_url if preset else None), provider=name, **kw)
