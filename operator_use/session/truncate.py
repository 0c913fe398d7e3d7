"""Fit a conversation into the model's context budget.

The newest messages are kept. An assistant message that called tools and the results of those calls
form one unit: both are kept or both are dropped, because providers reject a tool result whose call is
missing (and a call without its result). The kept history starts at a human message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..messages import AIMessage, HistoryMessage, HumanMessage, ToolMessage

# Rough but provider-independent: about four characters per token, plus a small per-message overhead.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 1000


def estimate_tokens(message: HistoryMessage) -> int:
    n = len(message.content) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD
    if isinstance(message, AIMessage):
        for call in message.tool_calls:
            n += (len(call.name) + len(json.dumps(call.arguments, ensure_ascii=False))) // CHARS_PER_TOKEN + 8
    elif isinstance(message, HumanMessage):
        n += IMAGE_TOKENS * len(message.images)
    return n


def _units(messages: Sequence[HistoryMessage]) -> list[list[HistoryMessage]]:
    """Group each tool-calling AI message with the tool results that answer it."""
    units: list[list[HistoryMessage]] = []
    for m in messages:
        if isinstance(m, ToolMessage) and units and _awaits(units[-1], m):
            units[-1].append(m)
        elif isinstance(m, ToolMessage):
            continue  # an orphan result (its call was lost): providers would reject it
        else:
            units.append([m])
    return units


def _awaits(unit: list[HistoryMessage], result: ToolMessage) -> bool:
    head = unit[0]
    return isinstance(head, AIMessage) and any(c.id == result.tool_call_id for c in head.tool_calls)


def _complete(unit: list[HistoryMessage]) -> bool:
    head = unit[0]
    if not isinstance(head, AIMessage) or not head.tool_calls:
        return True
    answered = {m.tool_call_id for m in unit[1:] if isinstance(m, ToolMessage)}
    return all(c.id in answered for c in head.tool_calls)


def fit_to_budget(messages: Sequence[HistoryMessage], budget_tokens: int) -> list[HistoryMessage]:
    units = [u for u in _units(messages) if _complete(u)]
    # The current turn (from the latest human message on) is always kept: without it there is no question.
    start = next((i for i in range(len(units) - 1, -1, -1) if isinstance(units[i][0], HumanMessage)), len(units) - 1)
    start = max(start, 0)
    kept = units[start:]
    used = sum(estimate_tokens(m) for unit in kept for m in unit)
    for unit in reversed(units[:start]):
        cost = sum(estimate_tokens(m) for m in unit)
        if used + cost > budget_tokens:
            break
        kept.insert(0, unit)
        used += cost
    # Start at a human turn so the model never sees an answer without its question.
    while len(kept) > 1 and not isinstance(kept[0][0], HumanMessage):
        kept.pop(0)
    return [m for unit in kept for m in unit]
