"""Turn the `llm` section of the configuration into a ready LLM (with its fallback chain).

With only `llm.base_url` set, the server is asked which models it serves (discover.py): the only one is
used; several, none or no answer stop the start with a message saying exactly that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...security.redact import strip_url_credentials
from .base import LLM
from .detect import Probe, detect_llm, explain_no_llm
from .discover import DiscoveryError, list_models, shown_ids
from .limits import StreamLimits
from .presets import LOCAL_KEY, get_preset

if TYPE_CHECKING:
    from pathlib import Path

    from ...config import LLMConfig

KEY_WITHOUT_PROVIDER = (
    "llm.api_key is set but not llm.provider (or llm.base_url): which service is it for? e.g. provider: openai\n"
    "Set llm.provider (OPERATOR_LLM__PROVIDER) to the key's service, or llm.base_url (OPERATOR_LLM__BASE_URL) "
    "to the server it is for."
)


async def llm_from_config(
    config: LLMConfig,
    *,
    env: Mapping[str, str] | None = None,
    probe: Probe | None = None,
    config_file: Path | None = None,
) -> tuple[LLM | None, str]:
    """Returns (llm, reason): the reason says where the choice came from, or, when `llm` is None,
    what the user should set. `config_file` is the config.yaml named in that advice."""
    from .fallback import FallbackLLM
    from .presets import make_llm

    env = os.environ if env is None else env
    common = {"timeout": config.timeout, "max_tokens": config.max_tokens}
    if config.provider or config.base_url:
        provider, model, base_url = config.provider or "openai-compatible", config.model, config.base_url
        preset = get_preset(provider)
        reason = (
            f"configured: {provider}"
            if config.provider
            else f"configured: OpenAI-compatible server at {strip_url_credentials(base_url or '')}"
        )
        # No model named and none to default to (a local server's preset, or only a base_url): ask the server.
        ask = base_url or (preset.base_url if preset else None)
        if model is None and (preset is None or preset.default_model is None) and ask:
            api_key = config.api_key.get_secret_value() if config.api_key else None
            model, problem = await _only_model(ask, api_key)
            if model is None:
                return None, problem
            reason = f"the only model served at {strip_url_credentials(ask)}"
    elif config.api_key is not None:
        # A key of the user's own must never go to whichever service detection happens to find (an OpenAI
        # key sent to Anthropic because ANTHROPIC_API_KEY is also set): the user says which service it is for.
        return None, KEY_WITHOUT_PROVIDER
    else:
        found = await detect_llm(env, probe)
        if found is None:
            return None, explain_no_llm(config_file)
        provider, model, base_url = found.provider, config.model or found.model, config.base_url or found.base_url
        reason = found.reason
    try:
        primary = make_llm(provider, model, _key(provider, config.api_key, base_url, env), base_url, env=env, **common)
        chain = [primary] + [
            make_llm(
                ref.provider,
                ref.model,
                _key(ref.provider, ref.api_key, ref.base_url, env),
                ref.base_url,
                env=env,
                **common,
            )
            for ref in config.fallbacks
        ]
    except ValueError as exc:
        # Only this problem: the "No LLM found" advice would contradict a model that is configured.
        return None, f"LLM configuration problem: {exc}"
    if len(chain) == 1:
        return primary, reason
    fallback = FallbackLLM(chain, failure_threshold=config.circuit_failures, cooldown=config.circuit_cooldown)
    return fallback, reason + f", falling back to {', '.join(llm.label for llm in chain[1:])}"


def _key(provider: str, api_key: Any, base_url: str | None, env: Mapping[str, str]) -> Any:
    """A server at a base_url of the user's own (a proxy, a local server under a preset's name) may need no
    key: without one configured or in the preset's variable, a placeholder the SDK accepts is sent."""
    preset = get_preset(provider)
    if api_key is None and base_url and preset is not None and preset.key_env and not env.get(preset.key_env):
        return LOCAL_KEY
    return api_key


async def _only_model(url: str, api_key: str | None) -> tuple[str | None, str]:
    """(the model, "") when the server serves exactly one; else (None, what to do about it)."""
    choose = "Choose one with llm.model in config.yaml, or OPERATOR_LLM__MODEL=NAME in the environment."
    base_url = strip_url_credentials(url)  # as shown: a user:password@ in it stays out of the terminal and logs
    try:
        models = await list_models(url, api_key)
    except DiscoveryError as exc:
        asked = (
            f"No model is set (llm.model), and the server at {base_url} could not be asked which models it "
            f"serves: {exc.problem} (GET {exc.url})."
        )
        if exc.status in (401, 403):  # it is running: it answered, and wants a key
            return None, asked + "\nSet llm.api_key (OPERATOR_LLM__API_KEY) to the server's key."
        return None, (
            asked + "\nCheck that the server is running at that address, or set "
            "llm.model (OPERATOR_LLM__MODEL) to the model to use."
        )
    if len(models) == 1:
        return models[0], ""
    if not models:
        return None, (
            f"No model is set (llm.model), and the server at {base_url} serves none (its model list is empty).\n"
            "Load a model on that server, or set llm.model (OPERATOR_LLM__MODEL) to the model to use."
        )
    listed = "\n".join(f"  {m}" for m in shown_ids(models))
    return None, (
        f"No model is set (llm.model), and the server at {base_url} serves {len(models)} models:\n{listed}\n"
        f"{choose} For example:\n  llm:\n    model: {models[0]}\nor\n  OPERATOR_LLM__MODEL={models[0]}"
    )


def stream_limits(config: LLMConfig) -> StreamLimits:
    """The configured limits; 0 turns one off (a YAML null would only bring the default back)."""
    return StreamLimits(
        call_deadline=config.call_deadline or None,
        idle_timeout=config.idle_timeout or None,
        max_output_chars=config.max_output_chars or None,
        max_tool_calls=config.max_tool_calls or None,
    )
