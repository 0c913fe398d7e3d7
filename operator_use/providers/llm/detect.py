"""Zero-config start: pick an LLM from API keys in the environment, else from a local server that answers.

A key beats a local server because a key is a deliberate choice, while a server may just be running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .discover import DiscoveryError, list_models
from .presets import PRESETS, Preset

if TYPE_CHECKING:
    from pathlib import Path

# Checked in this order; the first key that is set wins.
KEY_ORDER = ("anthropic", "openai", "groq", "openrouter", "gemini", "mistral", "deepseek", "cerebras")
LOCAL_ORDER = ("ollama", "lmstudio", "llamacpp", "vllm")
PROBE_TIMEOUT = 0.5

# A probe gets a base URL (".../v1") and says whether a server answers there: True, or the model ids it
# lists; False / None / an empty list when nothing usable answers.
ProbeResult = bool | Sequence[str] | None
Probe = Callable[[str], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class Detection:
    provider: str
    model: str | None
    base_url: str | None
    reason: str


async def probe_models(base_url: str) -> list[str] | None:
    """GET {base_url}/models, PROBE_TIMEOUT seconds in all (a server trickling its answer is given up on like a
    silent one; list_models caps the body); the ids listed, or None when nothing usable answers."""
    try:
        return await list_models(base_url, timeout=PROBE_TIMEOUT)
    except DiscoveryError:
        return None


async def detect_llm(env: Mapping[str, str], probe: Probe | None = None) -> Detection | None:
    for name in KEY_ORDER:
        preset = PRESETS[name]
        if preset.key_env and env.get(preset.key_env, "").strip():
            return Detection(
                name, preset.default_model, preset.base_url, f"using {preset.label} ({preset.key_env} is set)"
            )

    probe = probe or probe_models
    locals_ = [PRESETS[name] for name in LOCAL_ORDER]
    # All ports at once, so a machine with nothing running waits one timeout rather than four.
    results = await asyncio.gather(*(probe(p.base_url or "") for p in locals_), return_exceptions=True)
    for preset, result in zip(locals_, results, strict=False):
        if isinstance(result, BaseException) or not result:
            continue
        return _local(preset, result)
    return None


def _local(preset: Preset, result: ProbeResult) -> Detection:
    models = [] if result is True else list(result or ())
    model = models[0] if models else None
    where = (preset.base_url or "").removesuffix("/v1")
    if model:
        reason = f"using {preset.label} at {where} (model {model}; no API key is set)"
    else:
        reason = f"using {preset.label} at {where} (no API key is set; set llm.model to choose a model)"
    return Detection(preset.name, model, preset.base_url, reason)


def explain_no_llm(config_file: Path | None = None) -> str:
    """`config_file` is the config.yaml the agent reads (it depends on OPERATOR_HOME); without it, the default."""
    where = str(config_file) if config_file else "~/.operator-use/config.yaml (OPERATOR_HOME moves it)"
    keys = "\n".join(f"  {PRESETS[n].key_env:<20} {PRESETS[n].label}" for n in KEY_ORDER)
    return f"""\
No LLM found: no API key is set and no local model server answered.

Set one of these environment variables (checked in this order):
{keys}

or run `operator-use onboard` to choose one and write the configuration,

or name the provider in {where}:
  llm:
    provider: groq              # also together, fireworks, xai, lmstudio, llamacpp, vllm...
    model: llama-3.3-70b-versatile
    api_key: ...                # or the provider's variable above
    base_url: ...               # any OpenAI-compatible server
  (the same from the environment: OPERATOR_LLM__PROVIDER, OPERATOR_LLM__MODEL, OPERATOR_LLM__BASE_URL)

or run a model locally and start again:
  ollama serve & ollama pull llama3.2      # found on 127.0.0.1:11434
  LM Studio's server (1234), llama.cpp's llama-server (8080) and vLLM (8000) are found too.
"""
