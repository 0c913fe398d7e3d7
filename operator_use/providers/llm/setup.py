"""Turn the `llm` section of the configuration into a ready LLM (with its fallback chain)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .base import LLM
from .detect import Probe, detect_llm, explain_no_llm
from .limits import StreamLimits

if TYPE_CHECKING:
    from ...config import LLMConfig


async def llm_from_config(
    config: LLMConfig, *, env: Mapping[str, str] | None = None, probe: Probe | None = None
) -> tuple[LLM | None, str]:
    """Returns (llm, reason): the reason says where the choice came from, or, when `llm` is None,
    what the user should set."""
    from .fallback import FallbackLLM
    from .presets import make_llm

    env = os.environ if env is None else env
    common = {"timeout": config.timeout, "max_tokens": config.max_tokens}
    if config.provider:
        provider, model, base_url = config.provider, config.model, config.base_url
        reason = f"configured: {provider}"
    elif config.base_url:
        provider, model, base_url = "openai-compatible", config.model, config.base_url
        reason = f"configured: OpenAI-compatible server at {base_url}"
    else:
        found = await detect_llm(env, probe)
        if found is None:
            return None, explain_no_llm()
        provider, model, base_url = found.provider, config.model or found.model, config.base_url or found.base_url
        reason = found.reason
    try:
        primary = make_llm(provider, model, config.api_key, base_url, env=env, **common)
        chain = [primary] + [
            make_llm(ref.provider, ref.model, ref.api_key, ref.base_url, env=env, **common) for ref in config.fallbacks
        ]
    except ValueError as exc:
        return None, f"LLM configuration problem: {exc}\n\n{explain_no_llm()}"
    if len(chain) == 1:
        return primary, reason
    fallback = FallbackLLM(chain, failure_threshold=config.circuit_failures, cooldown=config.circuit_cooldown)
    return fallback, reason + f", falling back to {', '.join(llm.label for llm in chain[1:])}"


def stream_limits(config: LLMConfig) -> StreamLimits:
    """The configured limits; 0 turns one off (a YAML null would only bring the default back)."""
    return StreamLimits(
        call_deadline=config.call_deadline or None,
        idle_timeout=config.idle_timeout or None,
        max_output_chars=config.max_output_chars or None,
        max_tool_calls=config.max_tool_calls or None,
    )
